"""The loader for CoNaLa (curated): natural-language intents and the Python snippets for them.

Rows (``intent``, ``rewritten_intent``, ``snippet``, ``question_id``) come from a local
file (``data_files=``: the curated set's own JSON array files ``conala-train.json`` /
``conala-test.json``, or JSONL, JSONL.GZ or Parquet with those fields) or, online, from
the hub's ``neulab/conala`` (configuration ``curated``) through ``datasets`` (``pip
install "rise-gym[hub]"``). No package ships CoNaLa.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from rise_gym.data.rows import FieldError, optional_text_field, text_field
from rise_gym.data.sources import DatasetSpec, ProblemSet, Row, load_split
from rise_gym.errors import DataFileError, DatasetNotFound
from rise_gym.problems import Problem

HOW_TO_GET = (
    "CoNaLa ships with no package: download the curated set (conala-corpus-v1.1.zip, "
    "linked from https://conala-corpus.github.io) and pass "
    "data_files='.../conala-corpus/conala-test.json' (or conala-train.json, or a JSONL "
    'file of {"intent", "rewritten_intent", "snippet"} rows), or `pip install '
    '"rise-gym[hub]"` and go online to read neulab/conala from the Hugging Face hub'
)
"""How to get the data, appended to every `DatasetNotFound` for CoNaLa."""


def load_conala_problems(
    split: str = "test", data_files: str | os.PathLike[str] | None = None
) -> ProblemSet:
    """Load a split of the curated CoNaLa set, with where it came from.

    Args:
        split: ``"train"`` (2,379 intents) or ``"test"`` (500); with ``data_files`` it
            only names the problems (``conala/<split>/<row>``).
        data_files: A local ``.json`` array file (the curated set's own format) or a
            JSONL, JSONL.GZ or Parquet file with the same fields.

    Returns:
        The problems, in the file's order, and their ``origin``.

    Raises:
        ValueError: Unknown split.
        DataFileError: The file cannot be read, or a row lacks a string ``intent`` or
            ``snippet`` (the message names the file and row).
        DatasetNotFound: No file and no hub copy; the message says how to get the data.
    """
    try:
        if data_files is not None and Path(data_files).suffix.lower() == ".json":
            return _load_json_array(Path(data_files).expanduser(), split)
        return load_split(CONALA, split, data_files)
    except DatasetNotFound as error:
        cause = f"no source found for conala/{split}" if data_files is None else str(error)
        raise DatasetNotFound(f"{cause}. {HOW_TO_GET}") from None


def conala_problem(row: Row, split: str) -> Problem:
    """CoNaLa rows: intent, rewritten_intent (may be null), snippet, question_id."""
    intent = text_field(row, "intent")
    rewritten = optional_text_field(row, "rewritten_intent")
    snippet = text_field(row, "snippet")
    if not snippet.strip():
        raise FieldError('field "snippet" is empty; give every row its reference snippet')
    question = (rewritten or intent).strip()
    if not question:
        raise FieldError('fields "intent" and "rewritten_intent" are both empty')
    return Problem(
        id=f"conala/{split}/{row['idx']}",
        question=question,
        solution=snippet,
        metadata={"intent": intent, "question_id": row.get("question_id")},
    )


CONALA = DatasetSpec(
    "conala", ("train", "test"), conala_problem, lambda split: None, "neulab/conala", "curated"
)
"""Where CoNaLa comes from and how its rows become problems."""


def _load_json_array(path: Path, split: str) -> ProblemSet:
    """The curated set's own format: one JSON array of row objects."""
    if split not in CONALA.splits:
        raise ValueError(f"conala has no split {split!r}; valid splits: {list(CONALA.splits)}")
    if not path.is_file():
        state = "is a directory" if path.is_dir() else "does not exist"
        raise DatasetNotFound(f"data_files={str(path)!r} for conala/{split} {state}")
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataFileError(
            f"{path} is not a readable JSON file ({error}); pass the curated set's "
            "conala-*.json, or a JSONL file with one row object per line"
        ) from error
    if not isinstance(rows, list) or not rows:
        raise DataFileError(f"{path} must hold a non-empty JSON array of row objects")
    problems = []
    for position, row in enumerate(rows):
        try:
            if not isinstance(row, dict):
                raise FieldError(f"must be a JSON object, got {type(row).__name__}")
            problems.append(conala_problem({"idx": position, **row}, split))
        except FieldError as error:
            raise DataFileError(f"{path}, row {position + 1}: {error}") from error
    return ProblemSet(tuple(problems), f"local file {path}")
