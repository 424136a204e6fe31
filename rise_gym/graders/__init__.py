"""Graders: final-answer matching for math, unit tests in a sandbox for code."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rise_gym.graders.code import CodeResult, grade_code
    from rise_gym.graders.math import extract_answer, grade_math

__all__ = ["CodeResult", "extract_answer", "grade_code", "grade_math"]

_HOMES = {
    "grade_math": "rise_gym.graders.math",
    "extract_answer": "rise_gym.graders.math",
    "grade_code": "rise_gym.graders.code",
    "CodeResult": "rise_gym.graders.code",
}


def __getattr__(name: str) -> Any:
    """Import a grader on first use, so `import rise_gym` stays light."""
    if name not in _HOMES:
        raise AttributeError(f"module 'rise_gym.graders' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_HOMES[name]), name)
