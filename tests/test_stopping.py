"""The stopping environment, the selection rules and a learned stopping policy."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import rise_gym  # noqa: F401  (registers the environments)
from agents.stopping import (
    StoppingPolicy,
    evaluate_selection,
    read_policy_settings,
    train_stopping_policy,
)
from rise_gym import EpisodeFinished, EpisodeNotStarted
from rise_gym.envs.stopping import CONTINUE, FEATURE_NAMES, SUBMIT, StoppingEnv, episode_features
from rise_gym.metrics import majority_at_turns, pass_at_turns
from rise_gym.records import EpisodeRecord, TurnRecord, read_records

EPISODES = Path(__file__).parent / "fixtures" / "stopping_episodes.jsonl"
FAST_PPO = {"n_steps": 256, "batch_size": 64, "learning_rate": 3e-3}


def episode(
    correct: list[bool], answers: list[str | None] | None = None, **metadata
) -> EpisodeRecord:
    answers = answers or [str(i) for i in range(len(correct))]
    turns = [
        TurnRecord(t + 1, f"\\boxed{{{a}}}", a, ok, metadata=dict(metadata))
        for t, (a, ok) in enumerate(zip(answers, correct))
    ]
    return EpisodeRecord("synthetic", "p", 0, "x", "agent", 0, turns)


def confident_episodes(count: int, seed: int) -> list[EpisodeRecord]:
    """Three turns, at most one correct; the token probability says which (0.9 vs 0.2)."""
    rng = np.random.default_rng(seed)
    records = []
    for index in range(count):
        correct_at = int(rng.integers(4))  # 3: no turn is correct
        turns = []
        for t in range(3):
            correct = t == correct_at
            answer = "42" if correct else str(100 + 10 * index + t)
            logprob = math.log(0.9 if correct else 0.2)
            turns.append(
                TurnRecord(t + 1, answer, answer, correct, metadata={"mean_logprob": logprob})
            )
        records.append(EpisodeRecord("synthetic", f"p{index}", index, "42", "a", index, turns))
    return records


# ---- the environment ------------------------------------------------------------------


def test_episodes_are_required_and_must_exist():
    with pytest.raises(ValueError, match="episodes="):
        gym.make("RISE-Stopping-v0")
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        StoppingEnv("missing.jsonl")
    with pytest.raises(ValueError, match="no usable episodes"):
        StoppingEnv([])


def test_gymnasium_and_sb3_check_env():
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = gym.make("RISE-Stopping-v0", episodes=EPISODES, turn_cost=0.05, num_problems=3)
    check_env(env.unwrapped, skip_render_check=False)
    sb3_check_env(StoppingEnv(EPISODES), warn=True)


def test_features_of_hand_made_episodes():
    records = read_records(EPISODES)
    # answers "15", "16", "15"; no log-probabilities
    rows = episode_features(records[4].turns, max_turns=3)
    assert rows.shape == (3, len(FEATURE_NAMES)) and rows.dtype == np.float32
    named = [dict(zip(FEATURE_NAMES, row.tolist())) for row in rows]
    assert named[0]["turn"] == pytest.approx(1 / 3) and named[2]["last_turn"] == 1
    assert [f["earlier_agreement"] for f in named] == [0, 0, 0.5]
    assert [f["changed"] for f in named] == [0, 1, 1]
    assert [f["vote_share"] for f in named] == pytest.approx([1, 1 / 2, 2 / 3])
    assert [f["is_majority"] for f in named] == [1, 1, 1]  # a tie goes to the latest answer
    assert [f["distinct_answers"] for f in named] == pytest.approx([1, 1, 2 / 3])
    assert [f["has_logprob"] + f["token_probability"] for f in named] == [0, 0, 0]
    # answers None (cut off at the token limit), "41", "40"; log-probabilities recorded
    first, second, _ = (
        dict(zip(FEATURE_NAMES, r.tolist()))
        for r in episode_features(records[2].turns, max_turns=5)
    )
    assert first["no_answer"] == first["truncated"] == first["has_logprob"] == 1
    assert first["token_probability"] == pytest.approx(math.exp(-2.0))
    assert first["vote_share"] == first["is_majority"] == first["distinct_answers"] == 0
    assert first["turn"] == pytest.approx(0.2) and second["changed"] == 1
    assert second["earlier_agreement"] == 0 and second["distinct_answers"] == 0.5


def test_rewards_costs_and_the_forced_last_submission():
    env = StoppingEnv(EPISODES, turn_cost=0.1)
    env.reset(options={"index": 0})  # correct at turn 1
    _, reward, terminated, truncated, info = env.step(SUBMIT)
    assert (reward, terminated, truncated, info["turn"], info["submitted"]) == (
        1.0,
        True,
        False,
        1,
        True,
    )
    with pytest.raises(EpisodeFinished):
        env.step(SUBMIT)
    env.reset(options={"index": 1})  # wrong, right, right
    assert env.step(CONTINUE)[1:3] == (-0.1, False)
    assert env.step(np.int64(SUBMIT))[1:3] == (1.0, True)
    env.reset(options={"index": 3})  # wrong at every turn
    assert [env.step(CONTINUE)[1] for _ in range(3)] == [-0.1, -0.1, 0.0]
    env.reset()
    with pytest.raises(ValueError, match="action"):
        env.step(2)
    with pytest.raises(EpisodeNotStarted):
        StoppingEnv(EPISODES).step(SUBMIT)


def test_stopping_at_once_is_optimal_when_only_the_first_answer_is_right():
    env = StoppingEnv([episode([True, False, False])] * 4, turn_cost=0.05)

    def episode_return(action: int) -> float:
        env.reset()
        total, done = 0.0, False
        while not done:
            _, reward, done, _, _ = env.step(action)
            total += reward
        return total

    assert episode_return(SUBMIT) == 1.0
    assert episode_return(CONTINUE) == pytest.approx(-0.1)


def test_reset_draws_episodes_with_the_seed_or_takes_an_index():
    env = StoppingEnv(EPISODES)
    draws = [env.reset(seed=7)[1]["index"]] + [env.reset()[1]["index"] for _ in range(9)]
    again = [env.reset(seed=7)[1]["index"]] + [env.reset()[1]["index"] for _ in range(9)]
    assert draws == again and len(set(draws)) > 1
    assert env.reset(options={"index": 5})[1]["problem_id"] == "arithmetic/d3/train/5"
    with pytest.raises(IndexError, match="0..5"):
        env.reset(options={"index": 6})
    with pytest.raises(ValueError, match="unknown reset option"):
        env.reset(options={"problem": 1})


def test_max_turns_num_problems_and_unusable_episodes():
    env = StoppingEnv(EPISODES, max_turns=2, num_problems=2)
    assert len(env.episodes) == 2 and env.max_turns == 2
    env.reset(options={"index": 0})
    assert env.step(CONTINUE)[1:3] == (0.0, False)
    assert env.step(CONTINUE)[1:3] == (1.0, True)  # turn 2 is now the last: submitted
    ungradable = episode([False, False])
    ungradable.turns[0].metadata["gradable"] = False
    assert len(StoppingEnv([ungradable, episode([False, True])]).episodes) == 1
    with pytest.raises(ValueError, match="stop_on_correct=False"):
        StoppingEnv([episode([False, True]), episode([True])])


# ---- selection rules ------------------------------------------------------------------


def test_baseline_rules_agree_with_the_metrics():
    records = read_records(EPISODES)
    for k in (2, 3):
        majority = evaluate_selection(records, "majority", max_turns=k)
        assert majority.accuracy == majority_at_turns(records, k) and majority.average_turns == k
        assert evaluate_selection(records, "oracle", max_turns=k).accuracy == pass_at_turns(
            records, k
        )
    oracle = evaluate_selection(EPISODES, "oracle")
    assert oracle.average_turns == pytest.approx((1 + 2 + 3 + 3 + 1 + 3) / 6)
    last, first = evaluate_selection(EPISODES, "last"), evaluate_selection(EPISODES, "first")
    assert (last.accuracy.value, last.average_turns) == (pytest.approx(3 / 6), 3.0)
    assert (first.accuracy.value, first.average_turns) == (pytest.approx(2 / 6), 1.0)
    assert first.accuracy.n == 6 and first.accuracy.low < 2 / 6 < first.accuracy.high
    with pytest.raises(ValueError, match="valid"):
        evaluate_selection(EPISODES, "best")


def test_ppo_learns_to_stop_at_the_confident_answer(tmp_path):
    train, test = confident_episodes(64, seed=0), confident_episodes(200, seed=1)
    policy = train_stopping_policy(
        train, total_timesteps=4096, turn_cost=0.02, seed=0, algorithm_kwargs=FAST_PPO
    )
    oracle = evaluate_selection(test, "oracle")
    learned = evaluate_selection(test, policy)
    assert learned.accuracy.value >= oracle.accuracy.value - 0.03
    assert learned.accuracy.value > evaluate_selection(test, "majority").accuracy.value + 0.3
    assert learned.average_turns <= oracle.average_turns + 0.1

    # the policy picks the turn the environment would end at under the same model
    env = StoppingEnv(test)
    for index in range(20):
        observation, info = env.reset(options={"index": index})
        done = False
        while not done:
            observation, _, done, _, info = env.step(int(policy.decide(observation[None])[0]))
        assert policy(test[index].turns).turn_index == info["turn"] - 1

    loaded = StoppingPolicy.load(policy.save(tmp_path / "policy"))
    assert loaded.max_turns == 3 and loaded.name == policy.name
    assert evaluate_selection(test, loaded) == learned


def test_a_folder_that_is_not_a_policy_is_refused_with_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such directory.*benchmarks/stopping.py"):
        StoppingPolicy.load(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="missing stopping.json, model.zip"):
        read_policy_settings(tmp_path)
    (tmp_path / "model.zip").write_bytes(b"")
    (tmp_path / "stopping.json").write_text(json.dumps({"features": ["turn"]}))
    with pytest.raises(ValueError, match="retrain"):
        read_policy_settings(tmp_path)


@pytest.mark.slow
def test_dqn_learns_to_stop_at_the_confident_answer():
    train, test = confident_episodes(64, seed=0), confident_episodes(200, seed=1)
    policy = train_stopping_policy(
        train,
        algorithm="dqn",
        total_timesteps=10_000,
        seed=0,
        algorithm_kwargs={"learning_rate": 3e-3},
    )
    oracle = evaluate_selection(test, "oracle")
    assert evaluate_selection(test, policy).accuracy.value >= oracle.accuracy.value - 0.03


def test_unknown_algorithm_is_refused():
    with pytest.raises(ValueError, match="ppo"):
        train_stopping_policy(EPISODES, algorithm="a2c")


def test_importing_the_stopping_modules_loads_no_torch():
    code = (
        "import sys, rise_gym, rise_gym.envs.stopping, agents.stopping; "
        "print([m for m in ('torch', 'stable_baselines3') if m in sys.modules])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_doctests():
    import doctest

    import rise_gym.envs.stopping

    results = doctest.testmod(rise_gym.envs.stopping)
    assert results.attempted > 0  # the examples are still there
    assert results.failed == 0
