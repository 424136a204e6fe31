"""Evaluate a model turn by turn (SequentialRetry) on an environment and print the metrics.

Usage::

    python examples/evaluate_model.py        # the offline default model on easy arithmetic
    python examples/evaluate_model.py --model Qwen/Qwen2.5-0.5B-Instruct \
        --env RISE-GSM8K-v0 --env-kwargs '{}' --max-new-tokens 512
"""

import argparse
import json

from agents import SequentialRetry
from agents.evaluate import evaluate
from agents.llm import SamplingParams, make_llm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="HF id or folder (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--env", default="RISE-Arithmetic-v0", help="environment id")
    parser.add_argument(
        "--env-kwargs",
        type=json.loads,
        default={"difficulty": 1},
        help='gym.make arguments as JSON (default: {"difficulty": 1})',
    )
    parser.add_argument("--problems", type=int, default=16, help="problems to evaluate on")
    parser.add_argument("--turns", type=int, default=3, help="turns per problem")
    parser.add_argument("--max-new-tokens", type=int, default=128, help="tokens per answer")
    args = parser.parse_args()

    llm = make_llm(args.model)
    agent = SequentialRetry(llm, SamplingParams(max_new_tokens=args.max_new_tokens))
    evaluation = evaluate(
        args.env,
        agent,
        num_problems=args.problems,
        max_turns=args.turns,
        env_kwargs=args.env_kwargs,
    )
    print(f"{agent.name} on {args.env} (95% intervals):")
    for name, estimate in evaluation.metrics.items():
        print(f"  {name:>6}  {estimate}")
    print("first answer:", evaluation.records[0].turns[0].response[:200])


if __name__ == "__main__":
    main()
