"""The batched rollout engine: batching, records, resume after an interruption."""

from __future__ import annotations

import json

import pytest

from agents import Action, FunctionAgent, rollout
from rise_gym.envs.arithmetic import generate_problems
from rise_gym.records import read_records

ENV = "RISE-Arithmetic-v0"
ENV_KWARGS = {"difficulty": 1, "max_turns": 3}


class CountingAgent:
    """Answers wrong at turn 1 and right from turn 2 on; counts batched calls."""

    name = "counting"

    def __init__(self, fail_on_call: int | None = None):
        self.batch_sizes: list[int] = []
        self.fail_on_call = fail_on_call

    def act(self, observations):
        if self.fail_on_call is not None and len(self.batch_sizes) == self.fail_on_call:
            raise RuntimeError("simulated crash")
        self.batch_sizes.append(len(observations))
        actions = []
        for observation in observations:
            question = observation[0]["content"].split("?")[0].removeprefix("What is ")
            a, b = (int(x) for x in question.split(" + "))
            attempt = sum(m["role"] == "assistant" for m in observation)
            answer = a + b if attempt >= 1 else a + b + 1
            actions.append(Action(f"\\boxed{{{answer}}}", llm_calls=1, generated_tokens=5))
        return actions


def test_one_batched_call_per_turn_and_records_every_turn():
    agent = CountingAgent()
    records = rollout(ENV, agent, num_episodes=8, env_kwargs=ENV_KWARGS, progress=False)
    assert agent.batch_sizes == [8, 8, 8]
    assert [r.index for r in records] == list(range(8))
    problems = generate_problems(1, "test", 1000)
    for record in records:
        assert record.problem_id == problems[record.index].id
        assert [t.correct for t in record.turns] == [False, True, True]
        assert record.turns[1].answer == problems[record.index].answer
        assert sum(t.generated_tokens for t in record.turns) == 15


def test_oracle_mode_finishes_episodes_early_and_shrinks_the_batch():
    agent = CountingAgent()
    records = rollout(
        ENV,
        agent,
        num_episodes=4,
        env_kwargs={**ENV_KWARGS, "stop_on_correct": True},
        progress=False,
    )
    assert agent.batch_sizes == [4, 4]
    assert all(len(r.turns) == 2 for r in records)


def test_resume_after_interruption_redoes_only_unfinished_episodes(tmp_path):
    output = tmp_path / "episodes.jsonl"
    kwargs = {**ENV_KWARGS, "max_turns": 2}
    # 5 episodes in batches of 2: turn 1 is calls 0-2, turn 2 finishes episodes 0 and 1
    # in call 3, then call 4 crashes: only the unfinished episodes 2-4 are lost
    crashing = CountingAgent(fail_on_call=4)
    with pytest.raises(RuntimeError, match="simulated crash"):
        rollout(
            ENV,
            crashing,
            num_episodes=5,
            env_kwargs=kwargs,
            output=output,
            batch_size=2,
            progress=False,
        )
    saved = read_records(output)
    assert [r.index for r in saved] == [0, 1]
    with output.open("a") as handle:  # a line cut short by the crash
        handle.write('{"env_id": "RISE-Arith')
    resumed = CountingAgent()
    records = rollout(
        ENV, resumed, num_episodes=5, env_kwargs=kwargs, output=output, batch_size=2, progress=False
    )
    assert resumed.batch_sizes == [2, 1, 2, 1]
    assert [r.index for r in records] == [0, 1, 2, 3, 4]
    assert [r.to_dict() for r in records[:2]] == [r.to_dict() for r in saved]


def test_output_of_another_agent_is_refused(tmp_path):
    output = tmp_path / "episodes.jsonl"
    rollout(
        ENV, CountingAgent(), num_episodes=1, env_kwargs=ENV_KWARGS, output=output, progress=False
    )
    other = FunctionAgent(lambda conversation: "1", name="other")
    with pytest.raises(ValueError, match="another output path"):
        rollout(ENV, other, num_episodes=1, env_kwargs=ENV_KWARGS, output=output, progress=False)


def test_wrong_number_of_responses_is_a_clear_error():
    class Broken:
        name = "broken"

        def act(self, observations):
            return ["1"]

    with pytest.raises(ValueError, match="one per observation"):
        rollout(ENV, Broken(), num_episodes=2, env_kwargs=ENV_KWARGS, progress=False)


def test_shuffled_problem_choice_is_seeded_and_within_range():
    agent = FunctionAgent(lambda conversation: "0")
    first = rollout(
        ENV,
        agent,
        num_episodes=5,
        shuffle=True,
        seed=1,
        progress=False,
        env_kwargs={"max_turns": 1},
    )
    again = rollout(
        ENV,
        agent,
        num_episodes=5,
        shuffle=True,
        seed=1,
        progress=False,
        env_kwargs={"max_turns": 1},
    )
    assert [r.index for r in first] == [r.index for r in again] != list(range(5))
    with pytest.raises(ValueError, match="choose 1..1000"):
        rollout(ENV, agent, num_episodes=1001, progress=False)


def test_records_are_json_lines(tmp_path):
    output = tmp_path / "episodes.jsonl"
    rollout(
        ENV, CountingAgent(), num_episodes=2, env_kwargs=ENV_KWARGS, output=output, progress=False
    )
    lines = output.read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["agent"] == "counting"
