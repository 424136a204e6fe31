"""Episode records: every turn of one episode, as written to JSONL and read by the metrics.

An episodes file holds one record per line, appended as each episode ends. Records
written by `agents.rollout` carry the settings that produced them, so a run resumes
only the episodes of its own settings (`resume_records`); a line cut short by a crash
is dropped on resume and the file repaired, and no complete record is ever lost.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rise_gym.errors import RiseGymError

logger = logging.getLogger(__name__)

_RECORD_START = b'{"env_id": '
"""How every line `append_record` writes begins (``env_id`` is the first field)."""


class ResultsError(RiseGymError, ValueError):
    """Stored results cannot be used: not a results file, a malformed record, other settings.

    The message names the file (and line) and the fix.
    """


@dataclass
class Sample:
    """One of several independent samples drawn at the same state (parallel sampling).

    Attributes:
        answer: The answer extracted from the sample (None if none could be extracted).
        correct: Whether the sample is correct.
        text: The sample's full text (may be omitted to keep records small).
    """

    answer: str | None
    correct: bool
    text: str | None = None


@dataclass
class TurnRecord:
    """One attempt of an episode.

    Attributes:
        turn: 1-based turn number.
        response: The submitted response.
        answer: The answer extracted from it (None if none).
        correct: Whether it was correct (reward 1.0).
        llm_calls: LLM generation requests made to produce this turn (a batch of n
            samples for one prompt counts as n calls; self-refine's feedback step counts).
        generated_tokens: Tokens generated to produce this turn, all samples included.
        samples: Independent samples behind the response (parallel sampling), if any.
        metadata: Anything else the agent reports (e.g. mean token log-probability).
    """

    turn: int
    response: str
    answer: str | None
    correct: bool
    llm_calls: int = 1
    generated_tokens: int = 0
    samples: list[Sample] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class EpisodeRecord:
    """A whole episode: the problem, the agent and every turn.

    Attributes:
        env_id: The registered environment id (e.g. ``"RISE-GSM8K-v0"``).
        problem_id: The problem's stable id.
        index: The problem's index in the environment's problem list.
        reference: The reference answer (None for code problems).
        agent: The agent's name.
        seed: The seed the episode was reset with.
        turns: Every attempt, in order.
        wall_time: Seconds spent on the episode (its share of batched calls).
        settings: What produced the episode (environment, agent, model, sampling), as
            `fingerprint` stores it; None in records written without them.
    """

    env_id: str
    problem_id: str
    index: int
    reference: str | None
    agent: str
    seed: int | None
    turns: list[TurnRecord] = field(default_factory=list)
    wall_time: float = 0.0
    settings: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (one line of an episodes JSONL file)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EpisodeRecord:
        """Rebuild a record from `to_dict` output."""
        turns = []
        for turn in data.get("turns", []):
            samples = turn.get("samples")
            turns.append(
                TurnRecord(
                    **{
                        **turn,
                        "samples": None if samples is None else [Sample(**s) for s in samples],
                    }
                )
            )
        return cls(**{**data, "turns": turns})


def fingerprint(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` as records store and compare them: JSON values, keys sorted.

    Paths become text, functions and classes their qualified names, other objects their
    ``str``.
    """
    return json.loads(json.dumps(settings, sort_keys=True, default=_plain))


def read_records(path: str | os.PathLike[str]) -> list[EpisodeRecord]:
    """Read the episode records of a JSONL file; a missing file holds none.

    A last line cut short by a crash mid-write is skipped with a warning (resuming the
    run drops it from the file and redoes its episode).

    Raises:
        ResultsError: ``path`` is a directory, or a line is not an episode record.
    """
    contents = _read(Path(path))
    if contents.notes:
        logger.warning("%s: %s; read the complete records only", path, "; ".join(contents.notes))
    return contents.records


def resume_records(
    path: str | os.PathLike[str], settings: Mapping[str, Any]
) -> list[EpisodeRecord]:
    """The finished episodes a run with ``settings`` resumes, with the file ready to append to.

    A line cut short by a crash mid-write is dropped with a one-line warning and the
    file rewritten without it; every complete record is kept. A missing file is
    created, so an unwritable path fails now rather than after the first episode.

    Args:
        path: The episodes file.
        settings: What produces the run's episodes (compared as `fingerprint` gives them).

    Returns:
        The records, all of ``settings``.

    Raises:
        ResultsError: ``path`` is a directory, cannot be written, holds a line that is not
            an episode record, or holds episodes of other settings (the message names
            the first differences and the fix).
    """
    path = Path(path)
    contents = _read(path)
    wanted = fingerprint(settings)
    for record in contents.records:
        if record.settings != wanted:
            what = (
                "episodes written without their settings (by an older rise-gym)"
                if record.settings is None
                else f"episodes of other settings ({differences(record.settings, wanted)})"
            )
            raise ResultsError(
                f"{path} holds {what}. Pass another output path to keep both, or move "
                f"{path} away to play every episode again"
            )
    try:
        if contents.notes:
            replace_file(path, b"".join(contents.lines))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.open("ab").close()
    except OSError as error:
        raise ResultsError(
            f"cannot write episodes to {path}: {error.strerror or error}; pass a writable path"
        ) from error
    if contents.notes:
        logger.warning(
            "%s: %s; repaired the file: dropped what was cut short, kept every complete record",
            path,
            "; ".join(contents.notes),
        )
    return contents.records


def differences(found: Mapping[str, Any], wanted: Mapping[str, Any]) -> str:
    """The first settings that differ, e.g. ``max_new_tokens: 8 there, 16 now``.

    Settings set on both sides come first, then those set on one side only.
    """
    keys = sorted(
        (key for key in {*found, *wanted} if found.get(key) != wanted.get(key)),
        key=lambda key: (key not in found or key not in wanted, key),
    )
    shown = [f"{key}: {_shown(found, key)} there, {_shown(wanted, key)} now" for key in keys[:4]]
    return "; ".join(shown) + (f"; {len(keys) - 4} more" if len(keys) > 4 else "")


def replace_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` at once: a crash leaves the old or the new file, never half."""
    handle, staging = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise


def append_record(path: str | os.PathLike[str], record: EpisodeRecord) -> None:
    """Append one record to a JSONL file as a single flushed line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record.to_dict(), ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


@dataclass
class _Contents:
    """An episodes file as read: its records, their lines, and what was cut short."""

    records: list[EpisodeRecord] = field(default_factory=list)
    lines: list[bytes] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _read(path: Path) -> _Contents:
    if path.is_dir():
        raise ResultsError(
            f"{path} is a directory, not an episodes file; pass a file path such as "
            f"{path / 'episodes.jsonl'}"
        )
    if path.exists() and not path.is_file():
        raise ResultsError(f"{path} is not a regular file; pass an episodes (JSONL) file path")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return _Contents()
    except OSError as error:
        raise ResultsError(f"cannot read {path}: {error.strerror or error}") from error
    contents = _Contents()
    *complete, tail = data.split(b"\n")
    for number, line in enumerate([*complete, tail], start=1):
        if not line.strip():
            continue
        last = number > len(complete)
        try:
            record = _record(line)
        except ValueError as error:
            recovered = _recover(line)
            if recovered:  # an older rise-gym appended a record onto a line cut short
                record, line = recovered
                contents.notes.append(f"line {number} starts with an episode cut short by a crash")
            elif last and _is_cut_record(line):
                contents.notes.append(f"line {number} is an episode cut short by a crash")
                continue
            else:
                raise ResultsError(
                    f"{path}:{number} is not an episode record ({error}); an episodes file "
                    "holds one JSON record per line. Fix or remove that line (the other "
                    "records are kept), or pass another output path"
                ) from error
        if last:
            contents.notes.append(f"line {number} lacks its newline")
        contents.records.append(record)
        contents.lines.append(line + b"\n")
    return contents


def _recover(line: bytes) -> tuple[EpisodeRecord, bytes] | None:
    """The whole record that follows a cut-short one on ``line``, and its text, if any."""
    start = line.rfind(_RECORD_START)
    if start <= 0 or not _is_cut_record(line[:start]):
        return None
    try:
        return _record(line[start:]), line[start:]
    except ValueError:
        return None


def _record(line: bytes) -> EpisodeRecord:
    """The record on one line; ValueError saying why there is none."""
    try:
        data = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise ValueError(f"not UTF-8 text: byte {line[error.start]:#04x}") from error
    if not isinstance(data, dict):
        raise ValueError(f"a JSON {type(data).__name__}, not an object")
    try:
        return EpisodeRecord.from_dict(data)
    except (TypeError, AttributeError, KeyError) as error:
        raise ValueError(str(error)) from error


def _is_cut_record(line: bytes) -> bool:
    """Whether ``line`` is the start of a line `append_record` wrote (or of its opening)."""
    return line.startswith(_RECORD_START) or _RECORD_START.startswith(line)


def _plain(value: Any) -> str:
    name = getattr(value, "__qualname__", None)
    return f"{value.__module__}.{name}" if name else str(value)


def _shown(settings: Mapping[str, Any], key: str) -> str:
    return json.dumps(settings[key], default=str) if key in settings else "unset"
