"""Benchmark: a learned stopping policy against majority vote, last answer and the oracle.

Records sequential-retry episodes of the default model on RISE-Arithmetic-v0 (train and
test splits, sampled at a temperature so turns differ), trains a stopping policy with
stable-baselines3 on the train episodes and scores every selection rule on the test
episodes::

    # record, train, evaluate (episodes go to runs/stopping/)
    python benchmarks/stopping.py
    # reuse recorded episodes
    python benchmarks/stopping.py --train-episodes TRAIN.jsonl --test-episodes TEST.jsonl

Recording is resumable (episodes are appended as they finish) and samples with fresh
randomness, so the recorded files, not the seed, are what reproduces a table. Writes
the episodes, the policy (``policy/``) and ``results.json`` under ``--output-dir``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

from agents.stopping import train_stopping_policy
from rise_gym.selection import BASELINE_RULES, SelectionRule, evaluate_selection

ENV_ID = "RISE-Arithmetic-v0"


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    output_dir = Path(args.output_dir)
    train = args.train_episodes or record(args, "train", args.num_train, output_dir)
    test = args.test_episodes or record(args, "test", args.num_test, output_dir)
    started = time.perf_counter()
    policy = train_stopping_policy(
        train,
        algorithm=args.algorithm,
        total_timesteps=args.timesteps,
        turn_cost=args.turn_cost,
        max_turns=args.max_turns,
        seed=args.seed,
    )
    training_seconds = time.perf_counter() - started
    policy.save(output_dir / "policy")
    rules: list[str | SelectionRule] = [*BASELINE_RULES, policy]
    results = {
        split: [evaluate_selection(path, rule, max_turns=args.max_turns) for rule in rules]
        for split, path in (("train", train), ("test", test))
    }
    print(
        f"Selection rules on {ENV_ID} ({args.max_turns} turns); policy trained in "
        f"{training_seconds:.0f} s\n"
    )
    print("| rule | test accuracy [95% CI] | avg turns | train accuracy |")
    print("|---|---|---|---|")
    for on_test, on_train in zip(results["test"], results["train"]):
        print(
            f"| {on_test.rule} | {on_test.accuracy} (n={on_test.accuracy.n}) "
            f"| {on_test.average_turns:.2f} | {on_train.accuracy} |"
        )
    summary = {
        "env_id": ENV_ID,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "train_episodes": str(train),
        "test_episodes": str(test),
        "training_seconds": training_seconds,
        "results": {
            split: [
                {"rule": s.rule, **asdict(s.accuracy), "average_turns": s.average_turns}
                for s in selections
            ]
            for split, selections in results.items()
        },
    }
    (output_dir / "results.json").write_text(json.dumps(summary, indent=2) + "\n")


def record(args: argparse.Namespace, split: str, num_problems: int, output_dir: Path) -> Path:
    """Record (or resume recording) sequential-retry episodes of the default model."""
    from agents import SequentialRetry, rollout
    from agents.llm.base import SamplingParams
    from agents.llm.factory import make_llm

    path = output_dir / f"arithmetic-d{args.difficulty}-{split}.jsonl"
    params = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature)
    agent = SequentialRetry(make_llm(), params)
    env_kwargs = {
        "difficulty": args.difficulty,
        "split": split,
        "max_turns": args.max_turns,
        "stop_on_correct": False,
    }
    rollout(
        ENV_ID,
        agent,
        num_episodes=num_problems,
        seed=args.seed,
        env_kwargs=env_kwargs,
        output=path,
        shuffle=True,
        batch_size=args.batch_size,
    )
    return path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-episodes", type=Path, help="reuse these train episodes")
    parser.add_argument("--test-episodes", type=Path, help="reuse these test episodes")
    parser.add_argument("--output-dir", type=Path, default=Path("runs/stopping"))
    parser.add_argument("--num-train", type=int, default=200, help="train problems to record")
    parser.add_argument("--num-test", type=int, default=200, help="test problems to record")
    parser.add_argument("--max-turns", type=int, default=5)
    parser.add_argument("--difficulty", type=int, default=2, help="arithmetic level (1..7)")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=None, help="conversations per call")
    parser.add_argument("--algorithm", choices=["ppo", "dqn"], default="ppo")
    parser.add_argument("--timesteps", type=int, default=20_000)
    parser.add_argument("--turn-cost", type=float, default=0.0, help="reward cost per extra turn")
    parser.add_argument("--seed", type=int, default=0)
    return parser


if __name__ == "__main__":
    main()
