"""The typed problem record every data loader yields and every environment consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Problem:
    """One math or code problem.

    Attributes:
        id: Stable identifier, unique within its data set (e.g. ``"gsm8k/test/17"``).
        question: The problem as posed to the model, without any instructions around it.
        answer: The reference final answer (math); ``None`` for code problems.
        solution: A worked reference solution, when the data set has one (used for the
            boost SFT phase of RISE); for code, the canonical program.
        tests: Python source with assertions run after the program (code problems).
        entry_point: Name of the function the tests call (code problems).
        metadata: Anything else the source carries (level, subject, ...).
    """

    id: str
    question: str
    answer: str | None = None
    solution: str | None = None
    tests: str | None = None
    entry_point: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
