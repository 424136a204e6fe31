"""Episode records: every turn of one episode, as written to JSONL and read by the metrics."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


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
    """

    env_id: str
    problem_id: str
    index: int
    reference: str | None
    agent: str
    seed: int | None
    turns: list[TurnRecord] = field(default_factory=list)
    wall_time: float = 0.0

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


def read_records(path: str | os.PathLike[str]) -> list[EpisodeRecord]:
    """Read the episode records of a JSONL file; a missing file holds none.

    A last line cut short by an interruption is ignored (its episode is redone on
    resume); a malformed line elsewhere raises `ValueError` naming the line.
    """
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(EpisodeRecord.from_dict(json.loads(line)))
        except (json.JSONDecodeError, TypeError) as error:
            if number == len(lines):
                break
            raise ValueError(
                f"{path}:{number} is not an episode record ({error}); "
                "delete the file or pick another output path"
            ) from error
    return records


def append_record(path: str | os.PathLike[str], record: EpisodeRecord) -> None:
    """Append one record to a JSONL file as a single flushed line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record.to_dict(), ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
