r"""Reproduce RISE's claim: after RISE, m1@t5 beats m1@t1 and the model's own m5@t1.

One script, two presets (every option overrides the preset's value; ``--help`` after
``--preset NAME`` shows that preset's defaults):

``--preset cpu`` (the default): the offline default model (SmolLM2-135M-Instruct, Q4_1
GGUF origin) on RISE-Arithmetic-v0 level 4 (a two-digit and a one-digit number with +, -
or x), 300 held-out problems (disjoint from the training split), bfloat16 generation and
training, 48 new tokens, history window 2. Untrained, the model scores about 11% (it
rambles); the boost phase (SFT on 200 reference solutions) takes it to about 60%, so RISE
starts from a model that is right on most but far from all problems. Then one or more
RISE iterations on 64 new training problems each, LoRA rank 16, 2 epochs.

``--preset gsm8k-gpu``: Qwen2.5-0.5B-Instruct (any hub id or folder via ``--model``) on
RISE-GSM8K-v0 with vLLM rollouts: 500 test problems, boost on 1000 reference
solutions, 2 iterations on 1000 training problems, best of 8 samples, 512 new tokens.
Install on a machine where ``nvidia-smi`` works with ``bash scripts/setup.sh`` (adds the
vllm extra). GPU memory: vLLM and training share the GPU, so the engine takes
``--gpu-memory-utilization`` (0.5) of it; on a GPU under 40 GB lower
``--per-device-batch-size`` and raise ``--gradient-accumulation-steps``. Its run time
has not been measured.

Each run evaluates the untrained model at equal compute (sequential retry over 5 turns,
parallel sampling with k=5 at temperature 0.7, self-refine over 3 turns = 5 calls), runs
the boost phase and the RISE iterations, and evaluates the trained model sequentially
and in parallel. ``--improvement self`` draws the improved actions from the learner
(best of ``--num-samples``); ``--improvement expert --expert arithmetic|reference|MODEL``
distils from an expert. Runs of several configurations into one ``--output`` share the
untrained evaluations and the boost phase::

    python benchmarks/reproduce.py --improvement expert --expert arithmetic
    python benchmarks/reproduce.py --improvement self
    python benchmarks/reproduce.py --data-shape first_turn --data-filter success  # Classic SFT
    python benchmarks/reproduce.py --eval-problems 20 --train-problems 8 --iterations 1  # smoke
    python benchmarks/reproduce.py --preset gsm8k-gpu --improvement expert --expert reference

It prints, and writes to ``--output`` as results-RUN.md / results-RUN.json (RUN names the
configuration, e.g. ``self`` or ``expert-arithmetic``), p1@t1..t5, m1@t1..t5, m5@t1 and
p5@t1 with 95% Wilson intervals, right-to-wrong and wrong-to-right transitions, and the
gaps m1@t5 - m1@t1 and m1@t5 - m5@t1. Every step writes its records under ``--output``
and a re-run resumes from the last finished step. The pipeline is
`agents.rise.reproduce`; the README's "Reproducing RISE" reports the measured figures.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from agents.rise.reproduce import ReproductionSettings, add_options, run_command

PRESETS: dict[str, ReproductionSettings] = {
    "cpu": ReproductionSettings(
        env_id="RISE-Arithmetic-v0",
        env_kwargs={"difficulty": 4},
        dtype="bfloat16",
        eval_problems=300,
        train_problems=64,
        boost_problems=200,
        iterations=2,
        history_window=2,
        max_new_tokens=48,
        learning_rate=5e-4,
        epochs=2.0,
        per_device_batch_size=16,
        max_seq_length=512,
        batch_size=64,
        output=Path("runs/reproduce_cpu"),
    ),
    "gsm8k-gpu": ReproductionSettings(
        env_id="RISE-GSM8K-v0",
        model="Qwen/Qwen2.5-0.5B-Instruct",
        backend="vllm",
        eval_problems=500,
        train_problems=1000,
        boost_problems=1000,
        iterations=2,
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
    ),
}
"""The presets by name; ``--preset`` picks one, every other option overrides it."""

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
    "relabel_context",
    "rollout_temperature",
    "collect_stop_on_correct",
    "data_shape",
    "data_filter",
    "drop_unimproved",
    "self_refine",
    "ood_retry_prompts",
    "feedback_rows",
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
"""The settings the command line exposes (`ReproductionSettings` field names)."""


def build_parser(preset: str = "cpu") -> argparse.ArgumentParser:
    """The parser, with ``preset``'s values as the defaults."""
    defaults = PRESETS[preset]
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--preset", choices=list(PRESETS), default=preset, help="Preset.")
    parser.add_argument(
        "--difficulty",
        type=int,
        default=defaults.env_kwargs.get("difficulty"),
        help="RISE-Arithmetic level (arithmetic presets only).",
    )
    add_options(parser, defaults, OPTIONS)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Run the preset named by ``--preset`` with the other options as overrides."""
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--preset", choices=list(PRESETS), default="cpu")
    chosen, _ = first.parse_known_args(argv)
    parser = build_parser(chosen.preset)
    args = parser.parse_args(argv)
    defaults = PRESETS[args.preset]
    if args.difficulty is not None:
        defaults = replace(
            defaults, env_kwargs={**defaults.env_kwargs, "difficulty": args.difficulty}
        )
    run_command(parser, args, defaults)


if __name__ == "__main__":
    main()
