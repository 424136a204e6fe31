"""The experts that need no second model: the scripted arithmetic expert and the
reference-solution expert, as LLMs that RISE distils from."""

from __future__ import annotations

import pytest

from agents.llm.base import SamplingParams
from agents.rise.experts import ArithmeticExpert, ReferenceExpert, make_expert
from rise_gym.envs.arithmetic import MAX_DIFFICULTY, ArithmeticEnv
from rise_gym.envs.math import MathEnv


@pytest.mark.parametrize("difficulty", range(1, MAX_DIFFICULTY + 1))
def test_arithmetic_expert_is_right_on_every_level_without_copying_the_reference(difficulty):
    env = ArithmeticEnv(difficulty=difficulty, split="train", size=200, history_window=1)
    expert = ArithmeticExpert()
    for index, problem in enumerate(env.problems):
        observation, _ = env.reset(options={"index": index})
        observation, *_ = env.step("I think it is 7.")  # a later state: question stays on top
        (generation,) = expert.generate([observation], SamplingParams(n=2, temperature=1.0))
        assert len(generation.texts) == 2
        response = generation.texts[0]
        assert env.grade(response, problem).correct, (problem.question, response)
        assert response.endswith(f"The answer is \\boxed{{{problem.answer}}}.")
        assert problem.solution.split("\n")[0] not in response  # worked anew, not copied


def test_arithmetic_expert_refuses_what_it_cannot_solve():
    with pytest.raises(ValueError, match="only solves RISE-Arithmetic"):
        ArithmeticExpert().answer("Solve x^2 = 4.")
    with pytest.raises(ValueError, match="no adapter"):
        ArithmeticExpert().generate(
            [[{"role": "user", "content": "What is 1 + 2?"}]],
            SamplingParams(),
            adapter="some/adapter",
        )


def test_reference_expert_answers_with_each_problems_solution():
    env = MathEnv(dataset="gsm8k", split="train", num_problems=20)
    expert = ReferenceExpert(env)
    for index, problem in enumerate(env.problems):
        observation, _ = env.reset(options={"index": index})
        observation, *_ = env.step("The answer is 0.")
        (generation,) = expert.generate([observation], SamplingParams())
        assert generation.texts == [problem.solution]
        assert env.grade(generation.texts[0], problem).correct
    with pytest.raises(KeyError, match="same environment and split"):
        expert.answer("A problem from elsewhere")


def test_make_expert_builds_the_named_experts():
    assert isinstance(make_expert("arithmetic", "RISE-Arithmetic-v0"), ArithmeticExpert)
    reference = make_expert("reference", "RISE-Arithmetic-v0", {"difficulty": 2, "size": 5})
    assert isinstance(reference, ReferenceExpert) and len(reference.solutions) == 5
