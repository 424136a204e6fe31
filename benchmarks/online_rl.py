r"""Online multi-turn GRPO on RISE-Arithmetic-v0 level 4: held-out metrics and tokens spent.

Trains `agents.online_rl.MultiTurnGRPO` (the default model, SmolLM2-135M-Instruct, with
LoRA), then evaluates the base model and the trained adapter on held-out problems:
m1@t1, m1@t5 and p1@t5 (sequential retry, 5 turns) and m5@t1 (majority of 5 parallel
samples), as percentages with 95% intervals, and prints the tokens the training
episodes generated, to compare with RISE at equal generated tokens.

    python benchmarks/online_rl.py --steps 200      # a real run (GPU)
    python benchmarks/online_rl.py --steps 2 --train-problems 4 --eval-problems 4 \
        --num-generations 2 --problems-per-step 1 --max-new-tokens 32   # a smoke run
"""

from __future__ import annotations

import argparse
from pathlib import Path

from agents.evaluate import evaluate
from agents.llm.base import LLM, SamplingParams
from agents.llm.factory import make_llm
from agents.online_rl import MultiTurnGRPO, OnlineRLConfig
from agents.parallel import ParallelSampling
from agents.sequential import SequentialRetry
from rise_gym.metrics import Estimate

ENV_ID = "RISE-Arithmetic-v0"
ENV_KWARGS = {"difficulty": 4}
METRICS = ("m1@t1", "m1@t5", "p1@t5", "m5@t1")


def main() -> None:
    """Train, evaluate and print the table."""
    args = _parser().parse_args()
    config = OnlineRLConfig(
        max_turns=args.max_turns,
        num_generations=args.num_generations,
        problems_per_step=args.problems_per_step,
        train_problems=args.train_problems,
        max_steps=args.steps,
        max_new_tokens=args.max_new_tokens,
        credit=args.credit,
        improvement_bonus=args.improvement_bonus,
        output_dir=args.output_dir,
    )
    agent = MultiTurnGRPO(args.model, config).learn(ENV_ID, ENV_KWARGS)
    llm = make_llm(args.model)
    params = SamplingParams(max_new_tokens=args.max_new_tokens, seed=0)
    print(f"| model | {' | '.join(METRICS)} |\n|" + "---|" * (len(METRICS) + 1))
    for label, adapter in (("base", None), ("online-rl", agent.adapter)):
        figures = _metrics(llm, params, adapter, args, Path(args.output_dir) / f"eval-{label}")
        print(f"| {label} | " + " | ".join(str(figures[name]) for name in METRICS) + " |")
    print(
        f"\n{ENV_ID} {ENV_KWARGS}, {args.eval_problems} held-out problems, "
        f"{agent.base_model}; training: {args.steps} steps, {agent.generated_tokens} "
        f"generated tokens ({config.problems_per_step} problems x {config.num_generations} "
        f"episodes of {config.max_turns} turns per step, credit={config.credit})"
    )


def _metrics(
    llm: LLM, params: SamplingParams, adapter: str | None, args: argparse.Namespace, folder: Path
) -> dict[str, Estimate]:
    """m1@t1, m1@t5, p1@t5 from 5 sequential turns and m5@t1 from 5 parallel samples."""
    split = {**ENV_KWARGS, "split": "test"}
    sequential = evaluate(
        ENV_ID,
        SequentialRetry(llm, params, adapter=adapter),
        num_problems=args.eval_problems,
        max_turns=5,
        env_kwargs=split,
        output=folder / "sequential.jsonl",
        progress=False,
    )
    sampled = SamplingParams(max_new_tokens=params.max_new_tokens, temperature=1.0, seed=0)
    parallel = evaluate(
        ENV_ID,
        ParallelSampling(llm, k=5, params=sampled, adapter=adapter),
        num_problems=args.eval_problems,
        env_kwargs=split,
        output=folder / "parallel.jsonl",
        progress=False,
    )
    return {**sequential.metrics, "m5@t1": parallel.metrics["m5@t1"]}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="Base model (default: SmolLM2-135M).")
    parser.add_argument("--steps", type=int, default=200, help="Optimizer steps.")
    parser.add_argument("--max-turns", type=int, default=3, help="Turns per training episode.")
    parser.add_argument("--num-generations", type=int, default=8, help="Episodes per problem.")
    parser.add_argument("--problems-per-step", type=int, default=4, help="Problems per step.")
    parser.add_argument("--train-problems", type=int, default=None, help="Training problems.")
    parser.add_argument("--eval-problems", type=int, default=200, help="Held-out problems.")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="Tokens per response.")
    parser.add_argument("--credit", default="final", help="'final' or 'discounted'.")
    parser.add_argument("--improvement-bonus", type=float, default=0.0, help="See OnlineRLConfig.")
    parser.add_argument("--output-dir", default="runs/online_rl_benchmark", help="Run folder.")
    return parser


if __name__ == "__main__":
    main()
