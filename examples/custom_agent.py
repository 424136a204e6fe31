"""A custom agent two ways, a class with act() and a wrapped function, scored by evaluate().

Usage::

    python examples/custom_agent.py --problems 20 --turns 3
"""

import argparse
import re
from collections.abc import Sequence

from agents import Action, FunctionAgent
from agents.evaluate import evaluate
from rise_gym.spaces import Conversation


class Calculator:
    """Adds the two numbers of 'What is a + b?'; any object with name and act() is an agent."""

    name = "calculator"

    def act(self, observations: Sequence[Conversation]) -> list[Action | str]:
        """Answer every observation of the batch (no LLM, so no calls or tokens)."""
        answers = []
        for conversation in observations:
            a, b = (int(n) for n in re.findall(r"\d+", conversation[0]["content"])[:2])
            answers.append(Action(text=f"\\boxed{{{a + b}}}", llm_calls=0))
        return answers


def guess(conversation: Conversation) -> str:
    """Guess 10 first, then one more at every retry."""
    attempts = sum(message["role"] == "assistant" for message in conversation)
    return f"\\boxed{{{10 + attempts}}}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=20, help="problems to evaluate on")
    parser.add_argument("--turns", type=int, default=3, help="turns per problem")
    args = parser.parse_args()
    for agent in (Calculator(), FunctionAgent(guess, name="guesser")):
        evaluation = evaluate(
            "RISE-Arithmetic-v0",
            agent,
            num_problems=args.problems,
            max_turns=args.turns,
            env_kwargs={"difficulty": 1},
            progress=False,
        )
        print(agent.name)
        for name, estimate in evaluation.metrics.items():
            print(f"  {name:>6}  {estimate}")


if __name__ == "__main__":
    main()
