"""Feedback in the math environments: each kind, its place in the next prompt, bad kinds."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

import rise_gym  # noqa: F401  (registers the environments)
from rise_gym.envs.arithmetic import ArithmeticEnv
from rise_gym.envs.base import DEFAULT_RETRY_PROMPT
from rise_gym.envs.math import NO_ANSWER_FEEDBACK

MATH_ENV_IDS = ("RISE-GSM8K-v0", "RISE-MATH-v0", "RISE-MATH500-v0", "RISE-Arithmetic-v0")
MBPP_FIXTURE = Path(__file__).parent / "fixtures" / "mbpp_sample.jsonl"
FOUND = "A final answer was found in your response."

GSM8K_CASES = [  # problem gsm8k/test/0, reference 18
    ("none", "She makes 9 * 2 = 18 dollars.\n#### 18", ""),
    ("none", "#### 17", ""),
    ("none", "I am not sure.", ""),
    ("answer", "She makes 9 * 2 = 18 dollars.\n#### 18", "Your answer 18 is correct."),
    ("answer", "She makes 17 dollars.\n#### $17.00", "Your answer 17 is incorrect."),
    ("answer", "I am not sure.", NO_ANSWER_FEEDBACK),
    ("format", "She makes 9 * 2 = 18 dollars.\n#### 18", FOUND),
    ("format", "#### 17", FOUND),
    ("format", "I am not sure.", NO_ANSWER_FEEDBACK),
]

BOXED_CASES = [  # reference \frac{1}{2}
    ("none", "So \\boxed{\\frac{1}{2}}.", ""),
    ("answer", "So \\boxed{\\frac{1}{2}}.", "Your answer 0.5 is correct."),
    ("answer", "So \\boxed{\\frac{2}{3}}.", "Your answer 2/3 is incorrect."),
    ("answer", "So \\boxed{\\frac{2}{3}", NO_ANSWER_FEEDBACK),  # unclosed box
    ("answer", "\\boxed{1} or \\boxed{2}", NO_ANSWER_FEEDBACK),  # hedging
    ("format", "So \\boxed{\\frac{2}{3}}.", FOUND),
    ("format", "So \\boxed{\\frac{2}{3}", NO_ANSWER_FEEDBACK),
]


def write_math_rows(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def step_once(env: gym.Env, response: str) -> tuple[dict, str]:
    """Step ``response`` on problem 0; return the info and the retry message that follows."""
    env.reset(options={"index": 0})
    observation, *_, info = env.step(response)
    return info, observation[-1]["content"]


def expected_retry(feedback: str, question: str) -> str:
    retry = DEFAULT_RETRY_PROMPT.format(question=question)
    return f"{feedback}\n\n{retry}" if feedback else retry


@pytest.mark.parametrize(("kind", "response", "feedback"), GSM8K_CASES)
def test_gsm8k_feedback_precedes_the_retry_prompt(kind, response, feedback):
    env = gym.make("RISE-GSM8K-v0", feedback=kind, num_problems=1, max_turns=2)
    info, retry = step_once(env, response)
    assert info["feedback"] == feedback
    assert retry == expected_retry(feedback, env.unwrapped.problem.question)
    if not info["correct"]:
        assert info["reference"] == "18" and "18" not in feedback


@pytest.mark.parametrize(("kind", "response", "feedback"), BOXED_CASES)
def test_boxed_feedback_names_the_normalised_answer(tmp_path, kind, response, feedback):
    row = {"problem": "What is 1/2?", "solution": "It is $\\boxed{\\frac{1}{2}}$."}
    path = write_math_rows(tmp_path / "math.jsonl", [row])
    env = gym.make("RISE-MATH-v0", data_files=path, feedback=kind, max_turns=2)
    info, retry = step_once(env, response)
    assert info["feedback"] == feedback
    assert retry == expected_retry(feedback, "What is 1/2?")
    if not info["correct"]:
        assert "0.5" not in feedback and "frac{1}{2}" not in feedback


def test_an_ungradable_problem_gets_no_verdict(tmp_path):
    path = write_math_rows(tmp_path / "math.jsonl", [{"problem": "p", "solution": "no box"}])
    verdicts = {}
    for kind in ("answer", "format"):
        env = gym.make("RISE-MATH-v0", data_files=path, feedback=kind)
        info, _ = step_once(env, "\\boxed{1}")
        assert info["gradable"] is False
        verdicts[kind] = info["feedback"]
    assert verdicts == {"answer": "Your answer 1 could not be checked.", "format": FOUND}


def test_the_default_is_no_feedback_and_the_same_conversation():
    default = ArithmeticEnv(difficulty=1, num_problems=1, max_turns=3)
    explicit = ArithmeticEnv(difficulty=1, num_problems=1, max_turns=3, feedback="none")
    assert default.feedback == "none"
    conversations = []
    for env in (default, explicit):
        env.reset(seed=0)
        for response in ("\\boxed{100}", "no answer"):
            observation, *_, info = env.step(response)
            assert info["feedback"] == ""
        conversations.append(observation)
    assert conversations[0] == conversations[1]
    assert conversations[0][-1]["content"] == DEFAULT_RETRY_PROMPT.format(
        question=default.problem.question
    )


@pytest.mark.parametrize("env_id", MATH_ENV_IDS)
@pytest.mark.parametrize("kind", ["verbose", "pass_fail", None])
def test_a_bad_kind_is_refused_at_make_with_the_valid_kinds(env_id, kind):
    message = f"feedback must be one of ('none', 'answer', 'format'), got {kind!r}"
    with pytest.raises(ValueError) as caught:
        gym.make(env_id, feedback=kind, num_problems=1)
    assert str(caught.value) == message


def test_code_envs_word_their_refusal_the_same_way():
    with pytest.raises(ValueError) as caught:
        gym.make("RISE-MBPP-v0", data_files=MBPP_FIXTURE, feedback="answer")
    expected = "feedback must be one of ('none', 'pass_fail', 'test_output'), got 'answer'"
    assert str(caught.value) == expected


def test_history_window_keeps_the_feedback_of_the_attempts_it_keeps():
    env = ArithmeticEnv(difficulty=1, num_problems=1, history_window=1, feedback="answer")
    env.reset(seed=0)
    for response in ("\\boxed{100}", "\\boxed{101}", "\\boxed{102}"):
        observation, *_ = env.step(response)
    contents = [message["content"] for message in observation]
    assert contents[1:] == [
        "\\boxed{101}",
        expected_retry("Your answer 101 is incorrect.", env.problem.question),
        "\\boxed{102}",
        expected_retry("Your answer 102 is incorrect.", env.problem.question),
    ]


def test_a_feedback_placeholder_in_the_retry_prompt_receives_it():
    env = ArithmeticEnv(
        difficulty=1, num_problems=1, feedback="answer", retry_prompt="{feedback} Again: {question}"
    )
    env.reset(seed=0)
    observation, *_ = env.step("\\boxed{100}")
    expected = f"Your answer 100 is incorrect. Again: {env.problem.question}"
    assert observation[-1]["content"] == expected


@pytest.mark.parametrize("env_id", MATH_ENV_IDS)
@pytest.mark.parametrize("kind", ["answer", "format"])
def test_check_env_passes_with_feedback_on(env_id, kind):
    check_env(gym.make(env_id, feedback=kind, num_problems=3).unwrapped, skip_render_check=False)
