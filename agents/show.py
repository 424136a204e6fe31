"""A run's episodes as text, turn by turn: answers, correctness, feedback (``rise-gym show``).

Example:
    >>> from rise_gym.records import EpisodeRecord, TurnRecord
    >>> turns = [TurnRecord(1, "It is 3.", "3", False), TurnRecord(2, "It is 4.", "4", True)]
    >>> record = EpisodeRecord("RISE-Arithmetic-v0", "p7", 7, "4", "sequential", 7, turns)
    >>> [r.problem_id for r in select_episodes([record], transition="wrong_to_right")]
    ['p7']
    >>> print(format_episode(record))
    RISE-Arithmetic-v0 p7 (agent sequential, seed 7, reference 4): wrong -> right
      turn 1: wrong, answer 3
        It is 3.
      turn 2: right, answer 4
        It is 4.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Sequence
from pathlib import Path

from rise_gym.metrics import turn_transitions
from rise_gym.records import EpisodeRecord, ResultsError, TurnRecord, read_records

TRANSITIONS = {
    "changed": "correctness changes between consecutive turns (either way)",
    "right_to_wrong": "a right answer is followed by a wrong one",
    "wrong_to_right": "a wrong answer is followed by a right one",
}
"""The turn-to-turn transitions episodes can be filtered by, with what each means."""

FEEDBACK_KEYS = ("feedback", "critic")
"""Turn metadata holding the feedback an answer was written after: self-refine's own
critique, GLoRE's critic."""


def show(
    run: str | Path,
    *,
    problems: Iterable[str] = (),
    transition: str | None = None,
    limit: int | None = None,
) -> str:
    """The episodes of a run, filtered, as text (what ``rise-gym show`` prints).

    Args:
        run: A run folder (its ``episodes/*.jsonl``, or its ``*.jsonl`` without an
            ``episodes`` folder) or an episodes JSONL file.
        problems: Problem ids to keep (empty: all).
        transition: A key of `TRANSITIONS`: keep the episodes with that transition.
        limit: Show at most this many of the episodes kept (None: all).

    Returns:
        Each episode (`format_episode`), then a line counting what was shown.

    Raises:
        ResultsError: ``run`` holds no episodes files, a file is not one, or a problem
            id is in none of its episodes (the message shows the ids there).
    """
    records = read_run(run)
    known = {record.problem_id for record in records}
    for problem in problems:
        if problem not in known:
            examples = ", ".join(sorted(known)[:3])
            raise ResultsError(
                f"no episode of problem {problem!r} in {run}; its problem ids look like {examples}"
            )
    kept = select_episodes(records, problems=problems, transition=transition)
    shown = kept[:limit]
    summary = f"{len(shown)} of {len(kept)} matching episodes shown ({len(records)} in {run})"
    return "\n\n".join([*map(format_episode, shown), summary])


def read_run(run: str | Path) -> list[EpisodeRecord]:
    """The episode records of a run folder or of an episodes JSONL file, in file order.

    Raises:
        ResultsError: A folder holds no ``.jsonl`` file, a path does not exist, or a file
            is not an episodes file.
    """
    run = Path(run)
    if not run.exists():
        raise ResultsError(f"{run} does not exist; pass a run folder or an episodes JSONL file")
    if run.is_dir():
        folder = run / "episodes" if (run / "episodes").is_dir() else run
        files = sorted(folder.glob("*.jsonl"))
        if not files:
            raise ResultsError(
                f"{folder} holds no episodes (*.jsonl) files; pass a run folder (with "
                "episodes/*.jsonl) or an episodes JSONL file"
            )
        return [record for file in files for record in read_records(file)]
    return read_records(run)


def select_episodes(
    records: Sequence[EpisodeRecord],
    *,
    problems: Iterable[str] = (),
    transition: str | None = None,
) -> list[EpisodeRecord]:
    """The records of ``problems`` (all if empty) that have ``transition`` (any if None).

    Transitions are counted by `rise_gym.metrics.turn_transitions`; an ungradable
    episode has none.

    Raises:
        ValueError: ``transition`` is not a key of `TRANSITIONS`.
    """
    if transition is not None and transition not in TRANSITIONS:
        raise ValueError(f"unknown transition {transition!r}; choose from {list(TRANSITIONS)}")
    wanted = set(problems)
    return [
        record
        for record in records
        if (not wanted or record.problem_id in wanted)
        and (transition is None or _has_transition(record, transition))
    ]


def format_episode(record: EpisodeRecord) -> str:
    """An episode as text: a header with its correctness by turn, then every turn.

    Each turn gives its correctness and answer, the feedback it was written after (see
    `FEEDBACK_KEYS`), the answers of its samples (parallel sampling), the response, and
    the environment's feedback on it (envs with ``feedback`` other than ``"none"``).
    """
    path = " -> ".join(_verdict(turn.correct) for turn in record.turns) or "no turns"
    lines = [
        f"{record.env_id} {record.problem_id} (agent {record.agent}, seed {record.seed}, "
        f"reference {record.reference}): {path}"
    ]
    for turn in record.turns:
        lines += _turn_lines(turn)
    return "\n".join(lines)


def _turn_lines(turn: TurnRecord) -> list[str]:
    ungradable = " (ungradable)" if turn.metadata.get("gradable") is False else ""
    lines = [f"  turn {turn.turn}: {_verdict(turn.correct)}{ungradable}, answer {turn.answer}"]
    for key in FEEDBACK_KEYS:
        if turn.metadata.get(key):
            lines.append(textwrap.indent(f"{key}: {turn.metadata[key]}", "    "))
    if turn.samples:
        answers = ", ".join(f"{s.answer} ({_verdict(s.correct)})" for s in turn.samples)
        lines.append(f"    samples: {answers}")
    lines.append(textwrap.indent(turn.response or "(empty response)", "    "))
    if turn.metadata.get("env_feedback"):  # the environment's verdict, shown to the next turn
        lines.append(
            textwrap.indent(f"environment feedback: {turn.metadata['env_feedback']}", "    ")
        )
    return lines


def _has_transition(record: EpisodeRecord, transition: str) -> bool:
    try:
        counts = turn_transitions([record])
    except ValueError:  # an ungradable episode: turn_transitions scores none
        return False
    if transition == "changed":
        return counts["right_to_wrong"] + counts["wrong_to_right"] > 0
    return counts[transition] > 0


def _verdict(correct: bool) -> str:
    return "right" if correct else "wrong"
