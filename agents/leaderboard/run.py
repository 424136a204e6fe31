"""Run a leaderboard: every agent on every environment, resumably, then write the reports."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import gymnasium as gym

from agents.evaluate import evaluate
from agents.leaderboard.config import LeaderboardConfig
from agents.leaderboard.report import Entry, Leaderboard
from agents.leaderboard.roster import build_agent
from agents.llm.base import LLM, Generation, SamplingParams
from rise_gym.records import read_records
from rise_gym.spaces import Conversation


def run_leaderboard(config: LeaderboardConfig, *, progress: bool = True) -> Leaderboard:
    """Evaluate every agent on every environment and write the reports.

    Agents run one after another; each plays all problems of an environment in one
    batch per turn. Everything lands in ``config.run_folder()``: ``manifest.json``
    (the settings), ``episodes/<agent>--<env>.jsonl`` (every episode, appended as it
    finishes), ``leaderboard.md``, ``.csv``, ``.json`` and ``accuracy.png``. Running
    again with the same settings reuses every finished episode, and loads no model at
    all when nothing is left to generate. A ``stopping_policy`` is scored on the
    turn-by-turn agents' episodes; adding one later reuses the finished episodes.

    Args:
        config: What to evaluate.
        progress: Show a progress bar per agent x environment.

    Returns:
        The leaderboard, also written to the run folder.

    Raises:
        ValueError: An environment rejects its settings or has too few problems, or the
            run folder holds a manifest of other settings.
    """
    check_envs(config)
    stopping = config.load_stopping_policy()
    folder = config.run_folder()
    _claim(folder, config)
    llm = LazyLLM(config.build_llm)
    cells = [(kind, env_id) for kind in config.agents for env_id in config.envs]
    if any(_unfinished(_episodes(folder, *cell), config.num_problems) for cell in cells):
        llm.load()  # now, not inside the first cell's timed generation
    entries = []
    try:
        for kind in config.agents:
            agent = build_agent(kind, llm, config)
            for env_id in config.envs:
                evaluation = evaluate(
                    env_id,
                    agent,
                    num_problems=config.num_problems,
                    max_turns=config.max_turns,
                    seed=config.seed,
                    env_kwargs=config.env_kwargs(env_id),
                    output=_episodes(folder, kind, env_id),
                    batch_size=config.batch_size,
                    progress=progress,
                )
                entries.append(Entry.from_evaluation(evaluation, stopping))
    finally:
        llm.close()
    settings = {
        **config.settings(),
        "envs": config.envs,
        "agents": config.agents,
        "stopping_policy": config.stopping_policy,
    }
    leaderboard = Leaderboard(entries, config.max_turns, settings)
    leaderboard.write(folder)
    return leaderboard


def check_envs(config: LeaderboardConfig) -> None:
    """Build every environment once, so bad settings fail before any model loads.

    Raises:
        ValueError: An environment rejects its keyword arguments or has fewer than
            ``config.num_problems`` problems.
        DatasetNotFound: An environment's data is not installed.
    """
    for env_id in config.envs:
        kwargs = config.env_kwargs(env_id)
        try:
            env = gym.make(env_id, **kwargs).unwrapped
        except TypeError as error:
            raise ValueError(f"{env_id} rejects its settings {kwargs}: {error}") from error
        available = len(getattr(env, "problems", ()))
        if available < config.num_problems:
            raise ValueError(
                f"{env_id} has {available} problems but {config.num_problems} were asked "
                f"for; choose at most {available}"
            )


class LazyLLM(LLM):
    """A back end built on its first generation, so a fully resumed run loads nothing."""

    def __init__(self, build: Callable[[], LLM]):
        """Remember how to build the real back end."""
        self._build = build
        self._llm: LLM | None = None

    def generate(
        self,
        conversations: Sequence[Conversation],
        params: SamplingParams,
        *,
        adapter: str | None = None,
    ) -> list[Generation]:
        """Build the back end if needed, then generate with it."""
        return self.load().generate(conversations, params, adapter=adapter)

    def load(self) -> LLM:
        """The real back end, built on the first call."""
        if self._llm is None:
            self._llm = self._build()
        return self._llm

    def close(self) -> None:
        """Close the back end if it was built."""
        if self._llm is not None:
            self._llm.close()


def _claim(folder: Path, config: LeaderboardConfig) -> None:
    """Write the folder's manifest, or check that the one there has the same settings."""
    manifest = folder / "manifest.json"
    settings = json.loads(json.dumps(config.settings(), default=str))
    if manifest.exists():
        found = json.loads(manifest.read_text(encoding="utf-8"))
        if found != settings:
            raise ValueError(
                f"{folder} holds results of other settings ({manifest}); "
                "move it away or pick another output_dir"
            )
        return
    folder.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")


def _episodes(folder: Path, kind: str, env_id: str) -> Path:
    return folder / "episodes" / f"{kind}--{env_id}.jsonl"


def _unfinished(path: Path, num_problems: int) -> bool:
    return not set(range(num_problems)) <= {record.index for record in read_records(path)}
