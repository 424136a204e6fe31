"""Reproduce RISE's claim on CPU: after RISE, m1@t5 beats m1@t1 and the model's own m5@t1.

The default model (SmolLM2-135M-Instruct) on RISE-Arithmetic-v0: evaluate the untrained
model (sequential retry over 5 turns, parallel sampling with k=5, and self-refine over 3
turns, which is 5 LLM calls: equal compute), run the boost phase and RISE iterations with
self-distillation (best of N learner samples), then evaluate again. Every step writes its
records under ``--output`` and resumes if interrupted. Prints p1@t1..t5, m1@t1, m1@t5,
m5@t1 and p5@t1 with 95% intervals.

The default level is 1 (sums of two one-digit numbers), the only level at which this
135M model starts in the 30-60% range (level 2 and up: near 0%). Level 1 has exactly 100
distinct problems, so the default evaluation covers all of them once, and training and
evaluation share problems: the figures measure in-distribution self-correction, not
generalisation to unseen problems. On a GPU, use a larger model and a harder level.

    python benchmarks/reproduce_cpu.py                  # about 45 minutes on 2 cores
    python benchmarks/reproduce_cpu.py --eval-problems 20 --train-problems 16  # smoke run
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from agents import ParallelSampling, SelfRefine, SequentialRetry
from agents.evaluate import evaluate
from agents.llm import make_llm
from agents.llm.base import SamplingParams
from agents.llm.default_model import default_model_path
from agents.rise import RISEAgent, RISEConfig, TrainingConfig

ENV = "RISE-Arithmetic-v0"
COLUMNS = ("p1@t1", "p1@t2", "p1@t3", "p1@t4", "p1@t5", "m1@t1", "m1@t5", "m5@t1", "p5@t1")


def main() -> None:
    args = _parse_args()
    started = time.perf_counter()
    output = Path(args.output)
    env_kwargs = {"difficulty": args.difficulty}
    llm = make_llm(max_batch_size=args.batch_size)
    greedy = SamplingParams(max_new_tokens=args.max_new_tokens)
    sampled = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=0.7, seed=args.seed)

    def score(agent, name: str, max_turns: int = 5, records: Path | None = None) -> dict:
        evaluation = evaluate(
            ENV,
            agent,
            num_problems=args.eval_problems,
            max_turns=max_turns,
            seed=args.seed,
            env_kwargs={**env_kwargs, "history_window": args.history_window},
            output=records or output / "eval" / f"{name}.jsonl",
        )
        return evaluation.metrics

    rows: dict[str, dict] = {}
    rows["base: sequential"] = score(SequentialRetry(llm, greedy), "base-sequential")
    rows["base: parallel k=5"] = score(ParallelSampling(llm, 5, sampled), "base-parallel")
    rows["base: self-refine (3 turns)"] = score(
        SelfRefine(llm, greedy), "base-self-refine", max_turns=3
    )

    config = RISEConfig(
        iterations=args.iterations,
        max_turns=5,
        history_window=args.history_window,
        train_problems=args.train_problems,
        eval_problems=args.eval_problems,
        num_samples=args.num_samples,
        max_new_tokens=args.max_new_tokens,
        boost=args.boost,
        boost_problems=args.boost_problems,
        seed=args.seed,
        output_dir=output / ("rise" if args.boost else "rise-no-boost"),
    )
    training = TrainingConfig(
        learning_rate=args.learning_rate,
        num_epochs=args.epochs,
        per_device_batch_size=16,
        max_seq_length=512,
        seed=args.seed,
    )
    rise = RISEAgent(llm, default_model_path(), config, training, params=greedy).learn(
        ENV, env_kwargs
    )
    last = config.output_dir / f"iteration-{args.iterations}" / "eval.jsonl"
    rows["RISE: sequential"] = score(rise, "rise-sequential", records=last)  # learn() made it
    rows["RISE: parallel k=5"] = score(
        ParallelSampling(llm, 5, sampled, adapter=rise.adapter),
        f"{config.output_dir.name}-parallel",
    )
    _report(rows, output, time.perf_counter() - started, args)


def _report(rows: dict[str, dict], output: Path, seconds: float, args: argparse.Namespace) -> None:
    merged = {
        "base": {**rows["base: sequential"], **rows["base: parallel k=5"]},
        "RISE": {**rows["RISE: sequential"], **rows["RISE: parallel k=5"]},
    }
    header = "| agent | " + " | ".join(COLUMNS) + " |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 1)]
    for name, figures in rows.items():
        cells = [str(figures[c]) if c in figures else "" for c in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for model, figures in merged.items():
        turn_gain = 100 * (figures["m1@t5"].value - figures["m1@t1"].value)
        vs_parallel = 100 * (figures["m1@t5"].value - figures["m5@t1"].value)
        lines.append(
            f"\n{model}: m1@t5 - m1@t1 = {turn_gain:+.1f} points; "
            f"m1@t5 - m5@t1 = {vs_parallel:+.1f} points"
        )
    lines.append(
        f"\n{args.eval_problems} held-out problems, difficulty {args.difficulty}, "
        f"{seconds / 60:.1f} minutes"
    )
    table = "\n".join(lines)
    print(table)
    (output / "results.md").write_text(table + "\n")
    as_json = {name: {k: vars(v) for k, v in figures.items()} for name, figures in rows.items()}
    (output / "results.json").write_text(json.dumps(as_json, indent=2))


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--difficulty", type=int, default=1, help="RISE-Arithmetic level.")
    parser.add_argument("--eval-problems", type=int, default=100, help="Evaluation problems.")
    parser.add_argument("--train-problems", type=int, default=128, help="Rollouts per iteration.")
    parser.add_argument("--boost-problems", type=int, default=200, help="Boost SFT examples.")
    parser.add_argument(
        "--boost",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Run the boost SFT phase first (at level 1 it alone reaches 100%%).",
    )
    parser.add_argument("--iterations", type=int, default=1, help="RISE iterations.")
    parser.add_argument("--num-samples", type=int, default=4, help="Best-of-N samples per state.")
    parser.add_argument("--history-window", type=int, default=2, help="Earlier attempts kept.")
    parser.add_argument("--max-new-tokens", type=int, default=48, help="Tokens per response.")
    parser.add_argument("--learning-rate", type=float, default=5e-4, help="LoRA learning rate.")
    parser.add_argument("--epochs", type=float, default=2.0, help="Training epochs.")
    parser.add_argument("--batch-size", type=int, default=64, help="Generation batch size.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of everything.")
    parser.add_argument("--output", default="runs/reproduce_cpu", help="Output folder.")
    return parser.parse_args()


if __name__ == "__main__":
    main()
