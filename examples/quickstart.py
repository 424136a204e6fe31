"""Quickstart: play RISE-Arithmetic-v0 through the Gymnasium API with a hand-written agent."""

import re

import gymnasium as gym

import rise_gym  # noqa: F401  (registers the RISE-* environments)


def agent(conversation: list[dict[str, str]]) -> str:
    """Answer 'What is a + b?' one too high at first, then correctly: it self-corrects."""
    a, b = (int(n) for n in re.findall(r"\d+", conversation[0]["content"])[:2])
    attempts = sum(message["role"] == "assistant" for message in conversation)
    return f"The answer is \\boxed{{{a + b + (attempts == 0)}}}."


env = gym.make("RISE-Arithmetic-v0", difficulty=1, max_turns=3, stop_on_correct=True)
for episode in range(3):
    observation, info = env.reset(seed=episode, options={"index": episode})
    done = False
    while not done:
        action = agent(observation)
        observation, reward, terminated, truncated, info = env.step(action)
        done = terminated or truncated
        print(f"{info['problem_id']} turn {info['turn']}: {action} -> reward {reward}")
