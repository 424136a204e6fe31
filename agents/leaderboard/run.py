"""Run a leaderboard: every agent on every environment, resumably, then write the reports."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym

from agents.evaluate import plan_evaluation, run_evaluation
from agents.leaderboard.config import LeaderboardConfig
from agents.leaderboard.metadata import RunMetadata
from agents.leaderboard.plot import plot_accuracy
from agents.leaderboard.report import Entry, Leaderboard
from agents.leaderboard.roster import build_agent
from agents.llm.factory import LazyLLM
from agents.rollout import play_batched
from rise_gym.records import ResultsError, differences, fingerprint, replace_file


def run_leaderboard(config: LeaderboardConfig, *, progress: bool = True) -> Leaderboard:
    """Evaluate every agent on every environment and write the reports.

    Agents run one after another; each plays the problems of every environment together, one
    batch per turn (`play_batched`), or with ``config.ray_address`` on Ray actors that load
    their own models (`agents.ray_engine`; this process then loads none). Everything lands
    in ``config.run_folder()``: ``manifest.json`` (the settings),
    ``episodes/<agent>--<env>.jsonl`` (every episode, appended as it finishes),
    ``leaderboard.md``, ``.csv``, ``.json`` (each with the `RunMetadata`: model, back end,
    versions, date, commit) and ``accuracy.png``. Running again with the same settings
    reuses every finished episode, and loads no model at all when nothing is left to
    generate. A ``stopping_policy`` is scored on the turn-by-turn agents' episodes; adding
    one later reuses the finished episodes. Everything that can be checked (packages,
    environments, the server, the run folder and every episodes file) is checked before any
    model loads.

    Args:
        config: What to evaluate.
        progress: Show a progress bar per agent x environment.

    Returns:
        The leaderboard, also written to the run folder.

    Raises:
        ValueError: An environment rejects its settings or has too few problems.
        ResultsError: The run folder cannot be created, or holds a manifest or
            episodes of other settings, or a file that is not one of its own.
        MissingDependency: A package the run needs (the plot's matplotlib, the back
            end's) is not installed.
        ServerError: The 'openai' back end's server cannot be reached.
    """
    config.check_dependencies(plot=True)
    check_envs(config)
    served = config.with_served_model()
    metadata = RunMetadata.collect(config, served)
    config = served
    stopping = config.load_stopping_policy()
    folder = config.run_folder()
    _claim(folder, config)
    llm = LazyLLM(config.build_llm)
    agents = {kind: build_agent(kind, llm, config) for kind in config.agents}
    plans = [
        plan_evaluation(
            env_id,
            agents[kind],
            num_problems=config.num_problems,
            max_turns=config.max_turns,
            seed=config.seed,
            env_kwargs=config.env_kwargs(env_id),
            output=folder / "episodes" / f"{kind}--{env_id}.jsonl",
            settings=config.episode_settings(),
        )
        for kind in config.agents
        for env_id in config.envs
    ]
    try:
        if config.ray_address is None and any(plan.pending for plan in plans):
            llm.load()  # now, not inside the first cell's timed generation (Ray actors: theirs)
            for kind in config.agents:  # each agent on all environments at once
                same_agent = [plan for plan in plans if plan.agent is agents[kind]]
                play_batched(same_agent, batch_size=config.batch_size, progress=progress)
        entries = [
            Entry.from_evaluation(
                run_evaluation(
                    plan,
                    batch_size=config.batch_size,
                    progress=progress,
                    ray_address=config.ray_address,
                ),
                stopping,
            )
            for plan in plans
        ]
    finally:
        llm.close()
    settings = {
        **config.settings(),
        "envs": config.envs,
        "agents": config.agents,
        "stopping_policy": config.stopping_policy,
    }
    leaderboard = Leaderboard(entries, config.max_turns, settings, metadata)
    write_reports(leaderboard, folder)
    return leaderboard


def write_reports(leaderboard: Leaderboard, folder: str | Path) -> dict[str, Path]:
    """Write ``leaderboard.md``, ``.csv``, ``.json`` and the ``accuracy.png`` plot.

    Returns:
        The written paths by format (``"md"``, ``"csv"``, ``"json"``, ``"png"``).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {suffix: folder / f"leaderboard.{suffix}" for suffix in ("md", "csv", "json")}
    paths["md"].write_text(leaderboard.to_markdown(), encoding="utf-8")
    paths["csv"].write_text(leaderboard.to_csv(), encoding="utf-8")
    paths["json"].write_text(leaderboard.to_json(), encoding="utf-8")
    paths["png"] = plot_accuracy(leaderboard, folder / "accuracy.png")
    return paths


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


def _claim(folder: Path, config: LeaderboardConfig) -> None:
    """Write the folder's manifest, or check that the one there has the same settings."""
    manifest = folder / "manifest.json"
    settings = fingerprint(config.settings())
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not manifest.exists():
            replace_file(manifest, (json.dumps(settings, indent=2) + "\n").encode())
            return
        found = json.loads(manifest.read_text(encoding="utf-8"))
    except OSError as error:
        raise ResultsError(
            f"cannot use the run folder {folder}: {error.strerror or error}; pass another "
            "output_dir (--output-dir)"
        ) from error
    except ValueError as error:
        raise ResultsError(
            f"{manifest} is not a leaderboard manifest ({error}); move {folder} away, or "
            "pass another output_dir (--output-dir)"
        ) from error
    if found != settings:
        raise ResultsError(
            f"{folder} holds results of other settings ({differences(found, settings)}); "
            "move it away or pass another output_dir (--output-dir)"
        )
