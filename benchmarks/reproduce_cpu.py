"""Reproduce RISE's claim on CPU: after RISE, m1@t5 beats m1@t1 and the model's own m5@t1.

The default model (SmolLM2-135M-Instruct) on RISE-Arithmetic-v0: evaluate the untrained
model (sequential retry over 5 turns, parallel sampling with k=5, and self-refine over 3
turns, which is 5 LLM calls: equal compute), run the boost phase and RISE iterations with
self-distillation (best of N learner samples), then evaluate again. Every step writes its
records under ``--output`` and resumes if interrupted. Prints p1@t1..t5, m1@t1, m1@t5,
m5@t1 and p5@t1 with 95% intervals. The pipeline is `agents.rise.reproduce`, shared with
``benchmarks/reproduce_gsm8k_gpu.py``.

The default level is 4 (a two-digit and a one-digit number with +, - or x): untrained,
this 135M model scores about 10% there (it rambles), and the boost phase on 200 reference
solutions takes it to about 63%, so RISE starts from a model that is right on most but
far from all problems. From level 2 on the train and test splits are disjoint, so the
300 held-out problems were never trained on. (Level 1 has only 100 problems, shared by
both splits; levels 2 and 3 saturate above 90% after the boost, level 5 reaches about
20%.)

    python benchmarks/reproduce_cpu.py                  # about 37 minutes on 2 cores
    python benchmarks/reproduce_cpu.py --eval-problems 20 --train-problems 16  # smoke run
    python benchmarks/reproduce_cpu.py --dtype float32  # a CPU without AVX512-BF16 or AMX

Generation and training run in bfloat16 (``--dtype``), which on a CPU with AVX512-BF16
or AMX is about 2x faster than float32. Measured on 2 such cores: 37.2 minutes in all.
The three untrained evaluations took 11.4 minutes (sequential 4.9, parallel 2.2,
self-refine 4.3), boost training 1.3 and its evaluation 5.9, rollouts 0.6, best-of-4
relabelling of 313 states 2.1, the RISE training step (200 boost and about 630 relabelled
examples, 2 epochs, 104 steps) 9.9, the trained model's sequential evaluation 4.0 and
the two parallel evaluations 1.0 each. The same pipeline in float32, before this
project's decoding fixes, took about 2 hours.

The trained model did not improve over turns (m1@t1 62.0, m1@t5 59.0):
see the README's "Reproducing RISE" for the full table and what the data shows.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from agents.rise.reproduce import ReproductionSettings, add_options, run_command

DEFAULTS = ReproductionSettings(
    env_id="RISE-Arithmetic-v0",
    dtype="bfloat16",
    eval_problems=300,
    train_problems=64,
    boost_problems=200,
    iterations=2,
    num_samples=16,
    history_window=2,
    max_new_tokens=48,
    learning_rate=5e-4,
    epochs=2.0,
    per_device_batch_size=16,
    max_seq_length=512,
    batch_size=64,
    output=Path("runs/reproduce_cpu"),
)
OPTIONS = (
    "dtype",
    "eval_problems",
    "train_problems",
    "boost_problems",
    "boost",
    "iterations",
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
    "batch_size",
    "seed",
    "output",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--difficulty", type=int, default=4, help="RISE-Arithmetic level.")
    add_options(parser, DEFAULTS, OPTIONS)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    run_command(parser, args, replace(DEFAULTS, env_kwargs={"difficulty": args.difficulty}))


if __name__ == "__main__":
    main()
