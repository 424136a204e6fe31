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

    python benchmarks/reproduce_cpu.py                  # about 2 hours on 2 cores
    python benchmarks/reproduce_cpu.py --eval-problems 20 --train-problems 16  # smoke run

Measured on 2 cores (about 2 hours in all): the three untrained evaluations take about
40 minutes (300 problems x 5 calls of up to 48 rambling tokens), boost training and its
evaluation about 12, rollouts and best-of-4 relabelling about 18, the RISE training step
(200 boost and about 650 relabelled examples, 2 epochs, 108 steps of about 21 s) about 39,
the trained model's sequential evaluation about 9 and the two parallel evaluations about 4
each. The multi-turn evaluations generate about 65 tokens/s, the parallel ones about 145:
every turn first computes its new prompt tokens, and with a history window of 2 the
prompt of turn 5 drops the first attempt, so it no longer extends the cached
conversation and is computed in full (about a third of a 5-turn evaluation's time).

The trained model's first answer improved (66.3 vs 63.0) but its later turns did not
(m1@t5 62.7): see the README's "Reproducing RISE" for the full table and what the data
shows.
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
    train_problems=128,
    boost_problems=200,
    iterations=1,
    num_samples=4,
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
    "num_samples",
    "rollout_temperature",
    "data_filter",
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
