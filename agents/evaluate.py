"""Evaluate one agent on one environment: roll out, then compute the RISE metrics."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.base import Agent
from agents.llm.factory import require
from agents.rollout import Rollout, plan_rollout
from rise_gym.metrics import Estimate, summarize
from rise_gym.records import EpisodeRecord


@dataclass
class Evaluation:
    """The outcome of `evaluate`.

    Attributes:
        env_id: The environment evaluated on.
        agent: The agent's name.
        metrics: Figures by name (``p1@t1`` ... ``m1@t5``, ``m5@t1``, ...).
        records: Every episode record.
    """

    env_id: str
    agent: str
    metrics: dict[str, Estimate]
    records: list[EpisodeRecord]


def evaluate(
    env_id: str,
    agent: Agent,
    *,
    num_problems: int,
    max_turns: int = 5,
    seed: int = 0,
    env_kwargs: dict[str, Any] | None = None,
    output: str | Path | None = None,
    batch_size: int | None = None,
    progress: bool = True,
    settings: Mapping[str, Any] | None = None,
    engine: str = "batched",
    ray_address: str | None = None,
) -> Evaluation:
    """Run ``agent`` on the first ``num_problems`` problems without an oracle and score it.

    Episodes run all ``max_turns`` turns (no oracle stop), so both p1@tk (any of the
    first k answers correct) and m1@tk (majority of the first k answers) come from the
    same records; agents that record parallel samples also get mk@t1 and pk@t1.
    `plan_evaluation` then `run_evaluation` do the same in two steps.

    Args:
        env_id: A registered environment id.
        agent: The agent.
        num_problems: Problems to evaluate on.
        max_turns: Turns per episode (parallel-sampling agents always play one).
        seed: Seed of the episodes.
        env_kwargs: Extra keyword arguments for ``gym.make``.
        output: JSONL file of episode records (resumable; refused if it holds episodes
            of other settings).
        batch_size: Most observations per ``agent.act`` call.
        progress: Show a progress bar.
        settings: What else decides the outcomes (model, sampling, ...); see `rollout`.
        engine: ``"batched"`` or ``"async"`` (for servers); see `rollout`.
        ray_address: Play on actors of this Ray cluster (``"auto"``, ``"ray://HOST:PORT"``
            or ``"local"``; one per GPU, each with its own model and a shard of the
            problems), writing the same records; None plays here. See `agents.ray_engine`.

    Returns:
        The metrics and the records.
    """
    plan = plan_evaluation(
        env_id,
        agent,
        num_problems=num_problems,
        max_turns=max_turns,
        seed=seed,
        env_kwargs=env_kwargs,
        output=output,
        settings=settings,
    )
    return run_evaluation(
        plan, batch_size=batch_size, progress=progress, engine=engine, ray_address=ray_address
    )


def plan_evaluation(
    env_id: str,
    agent: Agent,
    *,
    num_problems: int,
    max_turns: int = 5,
    seed: int = 0,
    env_kwargs: dict[str, Any] | None = None,
    output: str | Path | None = None,
    settings: Mapping[str, Any] | None = None,
) -> Rollout:
    """The rollout `evaluate` plays, checked, with ``output``'s episodes read; nothing played.

    Raises:
        ValueError: ``num_problems`` is out of range.
        ResultsError: ``output`` cannot be resumed (see `resume_records`).
    """
    kwargs = {**(env_kwargs or {}), "max_turns": max_turns, "stop_on_correct": False}
    return plan_rollout(
        env_id,
        agent,
        num_episodes=num_problems,
        seed=seed,
        env_kwargs=kwargs,
        output=output,
        settings=settings,
    )


def run_evaluation(
    plan: Rollout,
    *,
    batch_size: int | None = None,
    progress: bool = True,
    engine: str = "batched",
    ray_address: str | None = None,
) -> Evaluation:
    """Play a `plan_evaluation` rollout's pending episodes and score all of them.

    Raises:
        MissingDependency: ``ray_address`` is given and ray is not installed.
    """
    if ray_address is None:
        records = plan.run(batch_size=batch_size, progress=progress, engine=engine)
    else:
        require("ray", purpose=f"ray_address={ray_address!r}")
        from agents.ray_engine import run_ray

        records = run_ray(
            plan, address=ray_address, batch_size=batch_size, progress=progress, engine=engine
        )
    metrics = summarize(records, max_turns=plan.env_kwargs["max_turns"])
    return Evaluation(plan.env_id, plan.agent.name, metrics, records)
