"""``rise-gym show``: a run's episodes turn by turn, filtered by problem and by transition."""

from __future__ import annotations

import doctest

import pytest

import agents.show as show_module
from agents.cli import main
from agents.show import format_episode, read_run, select_episodes, show
from rise_gym.records import EpisodeRecord, ResultsError, Sample, TurnRecord, append_record


def episode(
    problem_id: str, *correct: bool, agent: str = "sequential", **metadata
) -> EpisodeRecord:
    """An arithmetic episode whose turns are right or wrong as given (answer 4 is right)."""
    turns = [
        TurnRecord(i + 1, f"Attempt {i + 1}: \\boxed{{{4 if ok else 5}}}", str(4 if ok else 5), ok)
        for i, ok in enumerate(correct)
    ]
    for turn in turns:
        turn.metadata.update(metadata)
    return EpisodeRecord("RISE-Arithmetic-v0", problem_id, 0, "4", agent, 0, turns)


EPISODES = {
    "up": episode("up", False, True),
    "down": episode("down", True, False),
    "steady": episode("steady", True, True),
    "both": episode("both", False, True, False, False),
    "never": episode("never", False, False),
    "ungradable": episode("ungradable", False, True, gradable=False),
}
"""Hand-made episodes, by problem id, with known transitions."""


@pytest.fixture
def run_folder(tmp_path):
    """A leaderboard-like run folder: the episodes in two files under episodes/."""
    first, second = list(EPISODES.values())[:3], list(EPISODES.values())[3:]
    for name, records in (("a--env.jsonl", first), ("b--env.jsonl", second)):
        for record in records:
            append_record(tmp_path / "episodes" / name, record)
    return tmp_path


@pytest.mark.parametrize(
    ("transition", "expected"),
    [
        (None, ["up", "down", "steady", "both", "never", "ungradable"]),
        ("changed", ["up", "down", "both"]),
        ("right_to_wrong", ["down", "both"]),
        ("wrong_to_right", ["up", "both"]),
    ],
)
def test_episodes_are_selected_by_their_transitions(transition, expected):
    kept = select_episodes(list(EPISODES.values()), transition=transition)
    assert [record.problem_id for record in kept] == expected


def test_episodes_are_selected_by_problem_and_transition_together():
    records = list(EPISODES.values())
    assert [r.problem_id for r in select_episodes(records, problems=["never", "up"])] == [
        "up",
        "never",
    ]
    kept = select_episodes(records, problems=["up", "down"], transition="right_to_wrong")
    assert [r.problem_id for r in kept] == ["down"]
    with pytest.raises(ValueError, match="unknown transition 'sideways'; choose from"):
        select_episodes(records, transition="sideways")


def test_an_episode_shows_every_turn_with_its_answer_correctness_and_feedback():
    record = episode("p3", False, True, agent="self-refine")
    record.turns[1].metadata["feedback"] = "The sum is off by one.\nCheck the carry."
    record.turns[0].samples = [Sample("4", True), Sample("5", False)]
    record.turns[0].metadata["env_feedback"] = "Your answer 5 is incorrect."
    text = format_episode(record)
    assert text.splitlines() == [
        "RISE-Arithmetic-v0 p3 (agent self-refine, seed 0, reference 4): wrong -> right",
        "  turn 1: wrong, answer 5",
        "    samples: 4 (right), 5 (wrong)",
        "    Attempt 1: \\boxed{5}",
        "    environment feedback: Your answer 5 is incorrect.",
        "  turn 2: right, answer 4",
        "    feedback: The sum is off by one.",
        "    Check the carry.",
        "    Attempt 2: \\boxed{4}",
    ]
    assert "turn 2: right (ungradable), answer 4" in format_episode(EPISODES["ungradable"])


def test_a_run_folder_and_an_episodes_file_are_read_in_file_order(run_folder, tmp_path):
    assert [r.problem_id for r in read_run(run_folder)] == list(EPISODES)
    one_file = run_folder / "episodes" / "b--env.jsonl"
    assert [r.problem_id for r in read_run(one_file)] == ["both", "never", "ungradable"]
    assert [r.problem_id for r in read_run(run_folder / "episodes")] == list(EPISODES)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ResultsError, match="empty holds no episodes .*; pass a run folder"):
        read_run(tmp_path / "empty")


def test_show_limits_and_counts_what_it_shows(run_folder):
    text = show(run_folder, transition="changed", limit=2)
    headers = [line.split(" (")[0] for line in text.splitlines() if line.startswith("RISE-")]
    assert headers == ["RISE-Arithmetic-v0 up", "RISE-Arithmetic-v0 down"]
    assert text.endswith(f"2 of 3 matching episodes shown (6 in {run_folder})")


def run_show(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(["show", *argv])
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def test_the_show_command_filters_by_transition_problem_and_limit(run_folder, capsys):
    code, out, _ = run_show(capsys, str(run_folder), "--right-to-wrong")
    assert code == 0
    assert "RISE-Arithmetic-v0 down (agent sequential" in out and "both (agent" in out
    assert "up (agent" not in out and "2 of 2 matching episodes shown (6 in" in out
    code, out, _ = run_show(capsys, str(run_folder), "--problem", "steady", "--problem", "never")
    assert code == 0 and "steady (agent sequential, seed 0, reference 4): right -> right" in out
    assert "never (agent sequential, seed 0, reference 4): wrong -> wrong" in out
    assert "2 of 2 matching" in out
    code, out, _ = run_show(capsys, str(run_folder), "--wrong-to-right", "--limit", "1")
    assert code == 0 and "1 of 2 matching episodes shown" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--problem", "nope"], "no episode of problem 'nope' in"),
        (["--changed", "--right-to-wrong"], "not allowed with argument"),
        (["--limit", "0"], "the limit must be >= 1, got 0"),
        (["--sideways"], "unrecognized arguments: --sideways"),
    ],
)
def test_bad_show_arguments_are_one_line_errors(run_folder, capsys, argv, message):
    code, out, err = run_show(capsys, str(run_folder), *argv)
    assert code == 2 and out == "" and err.count("\n") == 1 and message in err


def test_a_path_without_episodes_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "notes.jsonl").write_text("not json\n")
    for path, message in [
        (tmp_path / "missing", "does not exist; pass a run folder or an episodes JSONL file"),
        (tmp_path / "notes.jsonl", "notes.jsonl:1 is not an episode record"),
    ]:
        code, out, err = run_show(capsys, str(path))
        assert code == 2 and err.count("\n") == 1 and message in err


def test_doctests():
    assert doctest.testmod(show_module).failed == 0
