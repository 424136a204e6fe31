r"""Benchmark: learned selection rules against majority vote, last answer and the oracle.

Records sequential-retry episodes of the default model on RISE-Arithmetic-v0 (train and
test splits, sampled at a temperature so turns differ), trains the two learned rules on
the train episodes, an answer scorer (`agents.answer_scoring`: scores every answer,
submits the best) and a stable-baselines3 stopping policy (`agents.stopping`: decides
turn by turn when to submit the current answer), and scores every rule on the test
episodes, each against majority vote on the same episodes (a paired 95% interval)::

    # record, train, evaluate (episodes go to runs/stopping/)
    python benchmarks/stopping.py
    # reuse recorded episodes (e.g. a RISE-trained model's), with the ablation
    python benchmarks/stopping.py --train-episodes TRAIN.jsonl --test-episodes TEST.jsonl \
        --ablation

``--ablation`` adds the scorer without each feature group and with each group alone,
and the stopping policy with more training steps, a turn cost, DQN and a tenth of the
data. Majority vote over the first k turns (k < max turns) is listed too: a stopping
rule that uses fewer turns is fairly compared with it at its own turn count.

Recording is resumable (episodes are appended as they finish) and samples with fresh
randomness, so the recorded files, not the seed, are what reproduces a table. Writes
the episodes, the scorer (``scorer/``), the policy (``policy/``) and ``results.json``
under ``--output-dir``; ``rise-gym leaderboard --stopping-policy runs/stopping/scorer``
reports a saved rule beside m1@tk.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from agents.answer_scoring import (
    ANSWER_FEATURES,
    FEATURE_GROUPS,
    AnswerScorer,
    train_answer_scorer,
)
from agents.stopping import LearnedRule, train_stopping_policy
from rise_gym.envs.stopping import EpisodeSource, load_episodes
from rise_gym.selection import BASELINE_RULES, Selection, evaluate_selection

ENV_ID = "RISE-Arithmetic-v0"


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    output_dir = Path(args.output_dir)
    train = args.train_episodes or record(args, "train", args.num_train, output_dir)
    test = args.test_episodes or record(args, "test", args.num_test, output_dir)
    train_records, max_turns = load_episodes(train, max_turns=args.max_turns)
    learned: dict[str, tuple[LearnedRule, float]] = {}

    def fit(name: str, make: Callable[[], LearnedRule]) -> LearnedRule:
        started = time.perf_counter()
        learned[name] = make(), time.perf_counter() - started
        return learned[name][0]

    def scorer(name: str, features: tuple[str, ...] = ANSWER_FEATURES) -> LearnedRule:
        return fit(
            name,
            lambda: train_answer_scorer(train, max_turns=max_turns, features=features, name=name),
        )

    def policy(name: str, episodes: EpisodeSource = train, **overrides: Any) -> LearnedRule:
        settings = {
            "algorithm": args.algorithm,
            "total_timesteps": args.timesteps,
            "turn_cost": args.turn_cost,
            "max_turns": max_turns,
            "seed": args.seed,
            **overrides,
        }
        return fit(name, lambda: train_stopping_policy(episodes, name=name, **settings))

    scorer("learned: answer scorer").save(output_dir / "scorer")
    policy(f"learned: stopping policy ({args.algorithm})").save(output_dir / "policy")
    if args.ablation:
        for group, names in FEATURE_GROUPS.items():
            scorer(f"scorer without {group}", tuple(f for f in ANSWER_FEATURES if f not in names))
            scorer(f"scorer with {group} only", names)
        policy("policy, 5x the steps", total_timesteps=5 * args.timesteps)
        policy("policy, turn cost 0.02", turn_cost=0.02)
        policy("policy, DQN", algorithm="dqn")
        policy("policy, 1/10 of the data", episodes=train_records[: len(train_records) // 10])

    rules = [*BASELINE_RULES, *(rule for rule, _ in learned.values())]
    results = {
        split: [
            *(evaluate_selection(path, rule, max_turns=max_turns) for rule in rules),
            *(_majority_over(path, k) for k in range(1, max_turns)),
        ]
        for split, path in (("train", train), ("test", test))
    }
    seconds = {name: spent for name, (_, spent) in learned.items()}
    print_table(results, max_turns, seconds)
    summary = {
        "env_id": ENV_ID,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "train_episodes": str(train),
        "test_episodes": str(test),
        "training_seconds": seconds,
        "scorer_weights": AnswerScorer.load(output_dir / "scorer").weights(),
        "results": {
            split: [
                {
                    "rule": s.rule,
                    **asdict(s.accuracy),
                    "average_turns": s.average_turns,
                    "minus_majority": asdict(s.advantage(selections[0])),
                }
                for s in selections
            ]
            for split, selections in results.items()
        },
    }
    (output_dir / "results.json").write_text(json.dumps(summary, indent=2) + "\n")


def print_table(
    results: dict[str, list[Selection]], max_turns: int, training_seconds: dict[str, float]
) -> None:
    """Print each rule's test accuracy, its paired gain over majority vote, turns and fit time."""
    test, train = results["test"], {s.rule: s for s in results["train"]}
    majority = test[0]
    print(f"Selection rules on {majority.accuracy.n} test episodes of {max_turns} turns\n")
    print(
        "| rule | test accuracy [95% CI] | minus majority vote [paired 95% CI] | avg turns "
        "| train accuracy | fit (s) |"
    )
    print("|---|---|---|---|---|---|")
    for selection in test:
        gain = selection.advantage(majority)
        seconds = training_seconds.get(selection.rule)
        print(
            f"| {selection.rule} | {selection.accuracy} | {100 * gain.value:+.1f} "
            f"[{100 * gain.low:+.1f}, {100 * gain.high:+.1f}] | {selection.average_turns:.2f} "
            f"| {train[selection.rule].accuracy} | {'–' if seconds is None else f'{seconds:.0f}'} |"
        )


def _majority_over(path: EpisodeSource, k: int) -> Selection:
    selection = evaluate_selection(path, "majority", max_turns=k)
    return Selection(f"majority over {k} turn(s)", selection.accuracy, k, selection.outcomes)


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
    parser.add_argument("--num-train", type=int, default=1000, help="train problems to record")
    parser.add_argument("--num-test", type=int, default=500, help="test problems to record")
    parser.add_argument("--max-turns", type=int, default=5)
    parser.add_argument("--difficulty", type=int, default=1, help="arithmetic level (1..7)")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=None, help="conversations per call")
    parser.add_argument("--algorithm", choices=["ppo", "dqn"], default="ppo")
    parser.add_argument("--timesteps", type=int, default=20_000)
    parser.add_argument("--turn-cost", type=float, default=0.0, help="reward cost per extra turn")
    parser.add_argument("--ablation", action="store_true", help="train and score the variants")
    parser.add_argument("--seed", type=int, default=0)
    return parser


if __name__ == "__main__":
    main()
