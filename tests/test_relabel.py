"""RISE relabelling: replayed states, best-of-N, the data filters, degrading rollouts."""

from __future__ import annotations

import pytest

from agents.rise.config import RISEConfig
from agents.rise.relabel import (
    Candidate,
    VisitedState,
    degrades,
    pick_best,
    replay_states,
    select_actions,
)
from rise_gym.envs.arithmetic import ArithmeticEnv
from rise_gym.records import EpisodeRecord, TurnRecord


def record_of(corrects: list[bool], responses: list[str] | None = None) -> EpisodeRecord:
    responses = responses or [f"attempt {i}" for i in range(len(corrects))]
    turns = [
        TurnRecord(turn=i + 1, response=r, answer=None, correct=c)
        for i, (r, c) in enumerate(zip(responses, corrects))
    ]
    return EpisodeRecord("RISE-Arithmetic-v0", "p", 0, "3", "a", 0, turns)


def state(on_policy: float, improved: float | None) -> VisitedState:
    return VisitedState(
        "p",
        0,
        1,
        [{"role": "user", "content": "q"}],
        Candidate("mine", on_policy, "on_policy"),
        None if improved is None else Candidate("better", improved, "improved"),
    )


def test_replay_rebuilds_the_observation_before_every_turn():
    env = ArithmeticEnv(difficulty=1, num_problems=3, history_window=1, max_turns=5)
    record = record_of([False, False, False], ["one", "two", "three"])
    record.index = 2
    states = replay_states(env, record)
    assert [s.turn for s in states] == [1, 2, 3]
    assert [m["role"] for m in states[0].conversation] == ["user"]
    assert states[0].conversation[0]["content"].startswith(env.problems[2].question)
    third = [m["content"] for m in states[2].conversation]
    assert third[1::2] == ["one", "two"]  # window 1: the previous and the newest attempt
    assert "not correct" in third[-1]
    assert states[1].on_policy == Candidate("two", 0.0, "on_policy")


def test_pick_best_prefers_a_correct_sample_and_falls_back_to_the_first():
    grade = lambda text: type("G", (), {"correct": text == "right"})()  # noqa: E731
    assert pick_best(["wrong", "right", "right"], grade) == Candidate("right", 1.0, "improved")
    assert pick_best(["wrong", "bad"], grade) == Candidate("wrong", 0.0, "improved")
    with pytest.raises(ValueError):
        pick_best([], grade)


@pytest.mark.parametrize(
    ("data_filter", "on_policy", "improved", "kept"),
    [
        ("all", 0.0, 1.0, ["mine", "better"]),
        ("all", 1.0, None, ["mine"]),
        ("better", 0.0, 1.0, ["mine", "better"]),
        ("better", 1.0, 1.0, ["mine"]),
        ("better", 0.0, 0.0, ["mine"]),
        ("best", 0.0, 1.0, ["better"]),
        ("best", 1.0, 1.0, ["mine"]),
        ("best", 0.0, 0.0, ["mine"]),
        ("success", 0.0, 1.0, ["better"]),
        ("success", 0.0, 0.0, []),
        ("success", 1.0, 1.0, ["mine", "better"]),
    ],
)
def test_each_filter_keeps_what_it_says(data_filter, on_policy, improved, kept):
    chosen = select_actions(state(on_policy, improved), data_filter)
    assert [c.response for c in chosen] == kept


def test_unknown_filter_is_refused_with_the_valid_ones():
    with pytest.raises(ValueError, match="valid"):
        select_actions(state(0.0, 1.0), "most")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="data_filter"):
        RISEConfig(data_filter="most")


def test_degrading_rollouts_are_detected():
    assert degrades(record_of([True, False]))
    assert degrades(record_of([False, True, False]))
    assert not degrades(record_of([False, False, True]))
    assert not degrades(record_of([True, True]))
    assert not degrades(record_of([]))


def test_config_validation_names_the_fix():
    with pytest.raises(ValueError, match="0.4"):
        RISEConfig(tau=0)
    with pytest.raises(ValueError, match="best-of-N"):
        RISEConfig(improvement="oracle")
    with pytest.raises(ValueError, match="sample_temperature"):
        RISEConfig(sample_temperature=0.0)
    with pytest.raises(ValueError, match="iterations"):
        RISEConfig(iterations=0)
