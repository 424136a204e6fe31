"""Train a model with RISE on easy arithmetic, with settings small enough for a CPU.

Boost (SFT on reference solutions), then RISE iterations: on-policy rollouts,
relabelling (best of N learner samples, or ``--expert arithmetic``: a scripted expert
that re-solves each question step by step), reward-weighted regression into a LoRA
adapter. Each step's held-out p1@tk / m1@tk is printed; the adapter is what
``rise-gym leaderboard --agents sequential rise --adapter ...`` compares with the base
model.

Usage::

    python examples/train_rise.py --iterations 1 --problems 32
    python examples/train_rise.py --iterations 1 --problems 32 --expert arithmetic
"""

import argparse

from agents.llm import make_llm, resolve_model
from agents.rise.agent import RISEAgent
from agents.rise.config import RISEConfig
from agents.rise.experts import make_expert
from agents.rise.train import TrainingConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="HF id or folder (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--iterations", type=int, default=1, help="RISE iterations")
    parser.add_argument("--problems", type=int, default=32, help="train and held-out problems")
    parser.add_argument("--turns", type=int, default=3, help="turns per rollout")
    parser.add_argument("--samples", type=int, default=4, help="best-of-N samples per state")
    parser.add_argument("--max-new-tokens", type=int, default=96, help="tokens per answer")
    parser.add_argument("--max-steps", type=int, default=-1, help="optimizer steps (-1: epochs)")
    parser.add_argument("--expert", help="distil from an expert: 'arithmetic' or a model")
    parser.add_argument("--output-dir", default="runs/rise-example", help="where runs go")
    args = parser.parse_args()

    config = RISEConfig(
        iterations=args.iterations,
        max_turns=args.turns,
        train_problems=args.problems,
        eval_problems=args.problems,
        boost_problems=args.problems,
        improvement="expert" if args.expert else "self",
        num_samples=args.samples,
        max_new_tokens=args.max_new_tokens,
        output_dir=args.output_dir,
    )
    env_id, env_kwargs = "RISE-Arithmetic-v0", {"difficulty": 1}
    expert = make_expert(args.expert, env_id, env_kwargs) if args.expert else None
    training = TrainingConfig(max_steps=args.max_steps, per_device_batch_size=4)
    llm = make_llm(args.model)
    agent = RISEAgent(llm, resolve_model(args.model), config, training, expert=expert)
    agent.learn(env_id, env_kwargs)
    for step in agent.history:
        print(step)
    print("adapter:", agent.adapter)


if __name__ == "__main__":
    main()
