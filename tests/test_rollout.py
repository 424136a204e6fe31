"""The batched rollout engine: batching, records, resume after an interruption."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest

from agents import Action, FunctionAgent, rollout
from agents.rollout import plan_rollout, play_batched
from rise_gym.envs.arithmetic import generate_problems
from rise_gym.records import ResultsError, read_records

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


def test_rollouts_of_one_agent_share_each_turns_call_and_keep_their_own_files(tmp_path):
    agent = CountingAgent()
    levels = {1: 5, 2: 3}  # difficulty: episodes; two environments of different lengths
    plans = [
        plan_rollout(
            ENV,
            agent,
            num_episodes=count,
            env_kwargs={"difficulty": level, "max_turns": level + 1},
            output=tmp_path / f"level-{level}.jsonl",
        )
        for level, count in levels.items()
    ]
    play_batched(plans, progress=False)
    assert agent.batch_sizes == [8, 8, 3]  # level 1 ends after turn 2, level 2 after 3
    for level, count in levels.items():
        records = read_records(tmp_path / f"level-{level}.jsonl")
        assert len(records) == count and {r.problem_id.split("/")[1] for r in records} == {
            f"d{level}"
        }
        assert all(len(r.turns) == level + 1 for r in records)
    again = plan_rollout(
        ENV,
        agent,
        num_episodes=5,
        env_kwargs={"difficulty": 1, "max_turns": 2},
        output=tmp_path / "level-1.jsonl",
    )
    assert again.pending == []
    with pytest.raises(ValueError, match="group them by agent"):
        play_batched([plans[0], plan_rollout(ENV, CountingAgent(), num_episodes=1)])


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
    assert [r.to_dict() for r in read_records(output)] == [r.to_dict() for r in records]


def run(output, agent=None, num_episodes=3, **options):
    options = {"env_kwargs": ENV_KWARGS, **options}
    agent = agent or CountingAgent()
    return rollout(ENV, agent, num_episodes=num_episodes, output=output, progress=False, **options)


@pytest.mark.parametrize(
    "cut",
    [
        lambda line: line[:1],  # the first byte of a record
        lambda line: line[: len(line) // 2],
        lambda line: line[:-2],  # all but the closing brace and the newline
        lambda line: line[: line.index("é".encode()) + 1],  # inside a UTF-8 character
    ],
    ids=["first-byte", "half", "no-brace", "mid-character"],
)
def test_a_line_cut_short_is_dropped_with_one_warning_and_the_file_repaired(tmp_path, caplog, cut):
    output = tmp_path / "episodes.jsonl"
    agent = FunctionAgent(lambda conversation: "café \\boxed{1}", name="accents")
    first = run(output, agent, num_episodes=3)
    lines = output.read_bytes().splitlines(keepends=True)
    output.write_bytes(b"".join(lines[:2]) + cut(lines[2]))
    with caplog.at_level(logging.WARNING, logger="rise_gym.records"):
        again = run(output, agent, num_episodes=3)
    [warning] = caplog.records
    assert "line 3" in warning.getMessage() and "\n" not in warning.getMessage()
    assert [r.to_dict() for r in again] == [r.to_dict() for r in first[:2]] + [again[2].to_dict()]
    assert output.read_bytes().splitlines(keepends=True)[:2] == lines[:2]
    assert len(read_records(output)) == 3 and output.read_bytes().endswith(b"\n")
    caplog.clear()
    run(output, agent, num_episodes=3)  # repaired: nothing to warn about, nothing to redo
    assert caplog.records == []


def test_complete_records_are_never_lost(tmp_path):
    output = tmp_path / "episodes.jsonl"
    records = run(output, num_episodes=3)
    lines = output.read_bytes().splitlines(keepends=True)
    # an older rise-gym appended a whole record onto a line cut short, then crashed again
    output.write_bytes(lines[0][:20] + lines[0] + lines[1] + lines[2].rstrip(b"\n"))
    assert [r.index for r in read_records(output)] == [0, 1, 2]
    agent = CountingAgent()
    again = run(output, agent, num_episodes=3)
    assert agent.batch_sizes == []  # every complete record was kept, none was redone
    assert [r.to_dict() for r in again] == [r.to_dict() for r in records]
    assert output.read_bytes() == b"".join(lines)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"env_id": "x"}\n[1, 2]\n', r"episodes.jsonl:1 is not an episode record"),
        (b"\x89PNG\r\n\x1a\n\x00\x00binary", r"episodes.jsonl:1 .*not UTF-8 text: byte 0x89"),
        (b"a,b,c\n1,2,3\n", r"episodes.jsonl:1 is not an episode record"),
        (b"just some text without a newline", r"episodes.jsonl:1 is not an episode record"),
    ],
    ids=["record-then-list", "binary", "csv", "text"],
)
def test_a_file_of_something_else_is_refused_and_left_alone(tmp_path, content, message):
    output = tmp_path / "episodes.jsonl"
    output.write_bytes(content)
    agent = CountingAgent()
    with pytest.raises(ResultsError, match=message) as error:
        run(output, agent)
    assert "delete" not in str(error.value) and "another output path" in str(error.value)
    assert output.read_bytes() == content and agent.batch_sizes == []


def test_a_malformed_line_inside_the_file_names_the_line_and_keeps_the_rest(tmp_path):
    output = tmp_path / "episodes.jsonl"
    run(output, num_episodes=3)
    lines = output.read_text().splitlines(keepends=True)
    output.write_text(lines[0] + "oops\n" + "".join(lines[1:]))
    with pytest.raises(ResultsError, match=r"episodes.jsonl:2 .*remove that line") as error:
        run(output, num_episodes=3)
    assert "delete" not in str(error.value)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"env_kwargs": {**ENV_KWARGS, "difficulty": 2}}, "env.difficulty: 1 there, 2 now"),
        ({"env_kwargs": {**ENV_KWARGS, "max_turns": 2}}, "env.max_turns: 3 there, 2 now"),
        ({"env_kwargs": {**ENV_KWARGS, "retry_prompt": "Again."}}, "env.retry_prompt: unset"),
        ({"seed": 1}, "seed: 0 there, 1 now"),
        ({"settings": {"model": "other", "max_new_tokens": 9}}, "max_new_tokens: 8 there, 9"),
        ({"settings": {"model": "other", "max_new_tokens": 8}}, 'model: "tiny" there'),
        ({"agent": FunctionAgent(lambda c: "1", name="other")}, '"counting" there, "other"'),
    ],
    ids=["difficulty", "max_turns", "retry_prompt", "seed", "tokens", "model", "agent"],
)
def test_episodes_of_other_settings_are_refused_naming_the_difference(tmp_path, change, named):
    output = tmp_path / "episodes.jsonl"
    run(output, settings={"model": "tiny", "max_new_tokens": 8})
    before = output.read_bytes()
    options = {"settings": {"model": "tiny", "max_new_tokens": 8}, **change}
    agent = options.pop("agent", CountingAgent())
    with pytest.raises(ResultsError, match="another output path") as error:
        run(output, agent, **options)
    assert named in str(error.value)
    assert output.read_bytes() == before


def test_equal_settings_reuse_the_episodes_and_more_problems_add_to_them(tmp_path):
    output = tmp_path / "episodes.jsonl"
    settings = {"model": "tiny", "env_kwargs_path": tmp_path}
    first = run(output, settings=settings, num_episodes=2)
    assert first[0].settings["model"] == "tiny" and first[0].settings["agent"] == "counting"
    agent = CountingAgent()
    more = run(output, agent, settings=settings, num_episodes=4)
    assert agent.batch_sizes == [2, 2, 2]  # only problems 2 and 3
    assert [r.to_dict() for r in more[:2]] == [r.to_dict() for r in first]


def test_records_without_settings_are_not_reused(tmp_path):
    output = tmp_path / "episodes.jsonl"
    run(output)
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    output.write_text("".join(json.dumps({**d, "settings": None}) + "\n" for d in lines))
    with pytest.raises(ResultsError, match="without their settings"):
        run(output)


@pytest.mark.parametrize("kind", ["directory", "under-a-file", "unwritable"])
def test_an_unusable_output_path_fails_before_any_episode(tmp_path, kind):
    output = {
        "directory": tmp_path,
        "under-a-file": tmp_path / "file" / "episodes.jsonl",
        "unwritable": Path("/proc/rise-gym-test/episodes.jsonl"),  # even for root
    }[kind]
    (tmp_path / "file").write_text("x")
    agent = CountingAgent()
    with pytest.raises(ResultsError, match=str(output)):
        plan_rollout(ENV, agent, num_episodes=1, env_kwargs=ENV_KWARGS, output=output)
    assert agent.batch_sizes == []


def test_a_negative_seed_is_refused():
    with pytest.raises(ValueError, match="seed must be >= 0, got -1"):
        rollout(ENV, CountingAgent(), num_episodes=1, seed=-1, progress=False)


def test_output_of_another_agent_is_refused(tmp_path):
    output = tmp_path / "episodes.jsonl"
    rollout(
        ENV, CountingAgent(), num_episodes=1, env_kwargs=ENV_KWARGS, output=output, progress=False
    )
    other = FunctionAgent(lambda conversation: "1", name="other")
    with pytest.raises(ResultsError, match="another output path"):
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


def test_the_progress_bar_counts_turns_as_they_are_played(monkeypatch):
    rollout_module = sys.modules["agents.rollout"]  # `agents.rollout` is also the function
    shown: list[tuple[int, int]] = []

    class Recording(rollout_module.tqdm):  # type: ignore[misc, name-defined]
        def update(self, n=1):
            super().update(n)
            shown.append((self.n, self.total))

    monkeypatch.setattr(rollout_module, "tqdm", Recording)
    agent = FunctionAgent(lambda observation: "The answer is 0", name="zero")
    rollout("RISE-Arithmetic-v0", agent, num_episodes=2, env_kwargs={"max_turns": 3})
    assert [n for n, total in shown if n] == [2, 4, 6, 6, 6] and shown[-1][1] == 6


def test_the_environments_feedback_is_kept_in_the_turn_records():
    agent = CountingAgent()
    with_feedback = rollout(
        ENV, agent, num_episodes=2, env_kwargs={**ENV_KWARGS, "feedback": "answer"}, progress=False
    )
    for record in with_feedback:
        wrong, right = record.turns[0], record.turns[1]
        assert wrong.metadata["env_feedback"] == f"Your answer {wrong.answer} is incorrect."
        assert right.metadata["env_feedback"] == f"Your answer {right.answer} is correct."
    without = rollout(ENV, CountingAgent(), num_episodes=2, env_kwargs=ENV_KWARGS, progress=False)
    assert all("env_feedback" not in turn.metadata for r in without for turn in r.turns)
