"""A training run's folder claimed by its settings: a re-run resumes it, another run is refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def claim_run_folder(
    record: Path, settings: dict[str, Any], defaults: dict[str, Any], *, kind: str
) -> None:
    """Record a run's settings in ``record``, or refuse a folder that holds another run.

    Resuming reuses every finished step, so a folder written with other settings would
    silently mix two runs. A setting absent from the record (one a later release added)
    counts as its default: the behaviour of the release that wrote it. Settings that may
    change between the runs of one folder (more iterations or steps) are left out of
    ``settings`` by the caller.

    >>> import tempfile
    >>> record = Path(tempfile.mkdtemp()) / "run" / "run.json"
    >>> settings = {"lr": 0.1, "train": {"rank": 8}}
    >>> claim_run_folder(record, settings, {}, kind="a run")  # writes the record
    >>> claim_run_folder(record, settings, {}, kind="a run")  # the same run: resumes
    >>> claim_run_folder(record, {**settings, "lr": 0.2}, {}, kind="a run")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: ... holds a run with other settings (lr); choose another output_dir, ...

    Args:
        record: The settings file inside the run folder (e.g. ``rise_run.json``); its
            parent is the folder.
        settings: What decides the run's results, as JSON values; nested dicts are
            sections, compared key by key.
        defaults: The default settings of each section a later release may extend, by
            section name (e.g. ``{"rise": {...}, "training": {...}}``).
        kind: The run's kind with its article, as the error names it: ``"a RISE run"``.

    Raises:
        ValueError: ``record`` holds other settings; the message names the changed
            settings by dotted name (``rise.num_samples``) and the fix.
    """
    if not record.exists():
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(settings, indent=2) + "\n")
        return
    before = json.loads(record.read_text())
    for section, section_defaults in defaults.items():
        before[section] = {**section_defaults, **before.get(section, {})}
    changed = sorted(changed_settings(before, settings))
    if changed:
        raise ValueError(
            f"{record.parent} holds {kind} with other settings ({', '.join(changed)}); "
            "choose another output_dir, or delete the folder to start over"
        )


def changed_settings(before: dict[str, Any], after: dict[str, Any], prefix: str = "") -> set[str]:
    """Dotted names of the settings that differ between two nested dicts.

    >>> sorted(changed_settings({"a": 1, "b": {"c": 2}}, {"a": 1, "b": {"c": 3, "d": 4}}))
    ['b.c', 'b.d']
    """
    changed = set()
    for key in before.keys() | after.keys():
        old, new = before.get(key), after.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changed |= changed_settings(old, new, f"{prefix}{key}.")
        elif old != new:
            changed.add(f"{prefix}{key}")
    return changed
