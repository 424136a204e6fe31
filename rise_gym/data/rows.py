"""Rows of local data files (JSONL, JSONL.GZ, Parquet) and checks of their fields.

Every failure is a `DataFileError` that names the file, the line (or Parquet row) and,
for a bad field, the field, and says how to fix it: a file that is binary, not UTF-8, not
gzip despite its ``.gz`` suffix, or not JSON Lines; a row that is not a JSON object; a
field that is missing, null or of the wrong type.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rise_gym.errors import DataFileError, DatasetNotFound

Row = dict[str, Any]

_GZIP_MAGIC = b"\x1f\x8b"


class FieldError(ValueError):
    """A row's field is missing, null or of the wrong type; the loader adds where it is."""


def read_rows(path: Path) -> list[Row]:
    """Read every record of a JSONL, JSONL.GZ or Parquet file.

    Raises:
        DataFileError: The file cannot be read as such (the message says why and how to fix it).
    """
    return [row for _, row in read_numbered_rows(path)]


def read_numbered_rows(path: Path) -> list[tuple[int, Row]]:
    """Every record of a data file with its line (JSONL) or row (Parquet) number, from 1.

    Raises:
        DataFileError: As `read_rows`.
    """
    if path.suffix.lower() == ".parquet":
        return list(enumerate(_read_parquet(path), start=1))
    try:
        if path.suffix.lower() == ".gz":
            with gzip.open(path, "rb") as handle:
                return list(_parse_jsonl(handle, path))
        with path.open("rb") as handle:
            return list(_parse_jsonl(handle, path))
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise DataFileError(
            f"{path} is named .gz but is not a complete gzip file ({error}); if it is plain "
            f"JSONL, rename it to {path.with_suffix('').name}, else compress the original again"
        ) from error
    except OSError as error:
        raise DataFileError(f"cannot read {path}: {error}") from error


def text_field(row: Row, name: str) -> str:
    """The string value of ``row[name]``.

    Raises:
        FieldError: The field is missing, null or not a string.
    """
    value = optional_text_field(row, name)
    if value is None:
        state = "is null" if name in row else "is missing"
        raise FieldError(f'field "{name}" {state}; give every row a string "{name}"')
    return value


def optional_text_field(row: Row, name: str) -> str | None:
    """The string value of ``row[name]``, or None when it is absent or null.

    Raises:
        FieldError: The field is present but not a string.
    """
    value = row.get(name)
    if value is not None and not isinstance(value, str):
        shown = json.dumps(value, default=str)[:40]
        raise FieldError(
            f'field "{name}" must be a string, got {type(value).__name__} {shown}; '
            f'write it as a JSON string, e.g. "{name}": {json.dumps(str(value))[:40]}'
        )
    return value


def _parse_jsonl(lines: Iterator[bytes], path: Path) -> Iterator[tuple[int, Row]]:
    for number, raw in enumerate(lines, start=1):
        line = _decoded(raw, path, number)
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataFileError(
                f"{path}:{number} is not valid JSON ({error.msg}, column {error.pos + 1}); "
                "fix that line: each line must hold one JSON object"
            ) from error
        if not isinstance(row, dict):
            raise DataFileError(
                f"{path}:{number} must be a JSON object, got {type(row).__name__}; each line "
                'must hold one object such as {"question": "...", "answer": "..."}'
            )
        yield number, row


def _decoded(raw: bytes, path: Path, number: int) -> str:
    """One line as text, or a `DataFileError` for binary, gzip or non-UTF-8 content."""
    if number == 1 and raw.startswith(_GZIP_MAGIC):
        raise DataFileError(
            f"{path} is gzip-compressed but not named .gz; rename it to {path.name}.gz"
        )
    if b"\x00" in raw:
        raise DataFileError(
            f"{path}:{number} holds NUL bytes: the file is binary, not JSON Lines text; "
            "pass a JSONL, JSONL.GZ or Parquet file"
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataFileError(
            f"{path}:{number} is not UTF-8 text (byte 0x{raw[error.start]:02x} at column "
            f"{error.start + 1}); save the file as UTF-8, e.g. `iconv -f latin1 -t utf-8`"
        ) from error


def _read_parquet(path: Path) -> list[Row]:
    try:
        import pyarrow.parquet as parquet  # type: ignore[import-not-found]
    except ImportError as error:
        raise DatasetNotFound(
            f"reading {path} needs pyarrow: `pip install pyarrow`, or convert it to JSONL"
        ) from error
    try:
        return list(parquet.read_table(path).to_pylist())
    except Exception as error:  # pyarrow raises its own ArrowInvalid, OSError, ...
        raise DataFileError(
            f"{path} is not a readable Parquet file ({error}); pass a valid Parquet file, "
            "or a JSONL file with one JSON object per line"
        ) from error
