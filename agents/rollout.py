"""The batched rollout engine: many episodes, one LLM call per turn for all of them."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from tqdm.auto import tqdm

import rise_gym
from agents.base import Action, Agent, as_action
from rise_gym.envs.base import MultiTurnEnv
from rise_gym.records import (
    EpisodeRecord,
    Sample,
    TurnRecord,
    append_record,
    fingerprint,
    resume_records,
)
from rise_gym.spaces import Conversation

T = TypeVar("T")


def rollout(
    env_id: str,
    agent: Agent,
    *,
    num_episodes: int,
    seed: int = 0,
    env_kwargs: dict[str, Any] | None = None,
    output: str | Path | None = None,
    shuffle: bool = False,
    batch_size: int | None = None,
    progress: bool = True,
    settings: Mapping[str, Any] | None = None,
    engine: str = "batched",
) -> list[EpisodeRecord]:
    """Run ``num_episodes`` episodes of ``env_id`` with ``agent``, batching every turn.

    All live episodes' observations go to ``agent.act`` in one call per turn (in chunks
    of ``batch_size`` if given). Finished episodes are appended to ``output`` as they
    end, so an interrupted run resumes without redoing them. `plan_rollout` then
    `Rollout.run` do the same in two steps (to load a model only when needed).

    Args:
        env_id: A registered id, e.g. ``"RISE-Arithmetic-v0"``.
        agent: Any object with ``name`` and ``act``.
        num_episodes: How many problems to pose (one episode each).
        seed: Seeds the environments and, with ``shuffle``, the choice of problems.
        env_kwargs: Keyword arguments for ``gym.make`` (max_turns, stop_on_correct, ...).
            An agent with ``single_turn = True`` (parallel sampling) gets ``max_turns=1``.
        output: JSONL file of episode records; its records of the same settings are
            reused, and records of other settings are refused.
        shuffle: Pose a seeded random subset of problems instead of the first ones.
        batch_size: Most observations per ``agent.act`` call; None sends all at once.
            With ``engine="async"``: most episodes waiting for an answer at once.
        progress: Show a progress bar.
        settings: What else decides the episodes' outcomes (model, sampling, ...),
            recorded in every episode beside the environment, its arguments, the agent's
            name and the seed.
        engine: ``"batched"`` (lock-step turns, one ``act`` call for all live episodes)
            or ``"async"`` (each episode advances on its own, for servers; see
            `agents.async_rollout`). Same records either way.

    Returns:
        The records of all ``num_episodes`` episodes (reused and new), in problem order.

    Raises:
        ResultsError: ``output`` cannot be resumed (see `resume_records`).
    """
    plan = plan_rollout(
        env_id,
        agent,
        num_episodes=num_episodes,
        seed=seed,
        env_kwargs=env_kwargs,
        output=output,
        shuffle=shuffle,
        settings=settings,
    )
    return plan.run(batch_size=batch_size, progress=progress, engine=engine)


def plan_rollout(
    env_id: str,
    agent: Agent,
    *,
    num_episodes: int,
    seed: int = 0,
    env_kwargs: dict[str, Any] | None = None,
    output: str | Path | None = None,
    shuffle: bool = False,
    settings: Mapping[str, Any] | None = None,
) -> Rollout:
    """Check a rollout and read the episodes ``output`` already holds, playing none.

    Takes the arguments of `rollout` but ``batch_size`` and ``progress``; the agent is
    not called, so its model may load later (only if `Rollout.pending` is not empty).

    Raises:
        ValueError: ``num_episodes`` is out of range, or ``seed`` is negative.
        ResultsError: ``output`` cannot be resumed (see `resume_records`).
    """
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    env_kwargs = dict(env_kwargs or {})
    if getattr(agent, "single_turn", False):
        env_kwargs["max_turns"] = 1
    template = _make_env(env_id, env_kwargs)
    indices = _problem_indices(len(template.problems), num_episodes, seed, shuffle)
    key = {
        **(settings or {}),
        "env_id": env_id,
        **{f"env.{name}": value for name, value in env_kwargs.items()},
        "agent": agent.name,
        "seed": seed,
    }
    finished = resume_records(output, key) if output else []
    return Rollout(
        env_id,
        agent,
        env_kwargs,
        seed,
        indices,
        {record.index: record for record in finished},
        None if output is None else Path(output),
        fingerprint(key),
    )


@dataclass
class Rollout:
    """Episodes to play, as `plan_rollout` checked them.

    Attributes:
        env_id: The environment id.
        agent: The agent.
        env_kwargs: Keyword arguments of every ``gym.make``.
        seed: The base seed (problem ``i`` is reset with ``seed + i``).
        indices: The problems to pose, in order.
        finished: Episodes ``output`` already holds, by problem index.
        output: The episodes file, or None.
        settings: What every new record carries as its ``settings``.
    """

    env_id: str
    agent: Agent
    env_kwargs: dict[str, Any]
    seed: int
    indices: list[int]
    finished: dict[int, EpisodeRecord]
    output: Path | None
    settings: dict[str, Any]

    @property
    def pending(self) -> list[int]:
        """The problems still to play."""
        return [index for index in self.indices if index not in self.finished]

    def episode_bar(self, pending: int, engine: str, *, progress: bool = True) -> tqdm:
        """A progress bar counting episodes, ``pending`` of them still to play.

        Engines that finish episodes out of order (async, Ray) count episodes; the
        batched engine counts turns.
        """
        return tqdm(
            total=len(self.indices),
            initial=len(self.indices) - pending,
            disable=not progress,
            desc=f"{self.agent.name} on {self.env_id} ({engine})",
            unit="episode",
        )

    def run(
        self, *, batch_size: int | None = None, progress: bool = True, engine: str = "batched"
    ) -> list[EpisodeRecord]:
        """Play the pending episodes (see `rollout`); return every record in problem order."""
        if engine == "async":
            from agents.async_rollout import run_async

            return run_async(self, max_in_flight=batch_size, progress=progress)
        if engine != "batched":
            raise ValueError(f"engine must be 'batched' or 'async', got {engine!r}")
        play_batched([self], batch_size=batch_size, progress=progress)
        return [self.finished[index] for index in self.indices]

    def _start(self, index: int) -> _Episode:
        env = _make_env(self.env_id, self.env_kwargs)
        observation, info = env.reset(seed=self.seed + index, options={"index": index})
        record = EpisodeRecord(
            env_id=self.env_id,
            problem_id=info["problem_id"],
            index=index,
            reference=info["reference"],
            agent=self.agent.name,
            seed=self.seed + index,
            settings=self.settings,
        )
        return _Episode(env, observation, record)


@dataclass
class _Episode:
    env: MultiTurnEnv
    observation: Conversation
    record: EpisodeRecord
    done: bool = False


def play_batched(
    rollouts: Sequence[Rollout], *, batch_size: int | None = None, progress: bool = True
) -> None:
    """Play the pending episodes of rollouts that share one agent, in lock-step turns.

    Every turn, the live episodes of all ``rollouts`` (several environments, say) go to
    ``agent.act`` together, in chunks of ``batch_size`` (None: all at once): on a
    back end that batches, fewer and fuller calls. Each finished episode is appended to
    its own rollout's output as it ends.

    Raises:
        ValueError: The rollouts do not share one agent.
    """
    if not rollouts:
        return
    agent = rollouts[0].agent
    if any(r.agent is not agent for r in rollouts):
        raise ValueError("play_batched plays rollouts of one agent; group them by agent")
    live = [(r, r._start(index)) for r in rollouts for index in r.pending]
    if not live:
        return
    # the bar counts turns (one answer each), so it moves after every batched call; an
    # episode that ends early counts its remaining turns as done
    turns = {id(r): 1 for r in rollouts}  # a rollout with nothing pending: done either way
    turns.update({id(r): episode.env.max_turns for r, episode in live})
    total = sum(len(r.indices) for r in rollouts)
    envs = ", ".join(dict.fromkeys(r.env_id for r in rollouts))
    bar = tqdm(
        total=sum(len(r.indices) * turns[id(r)] for r in rollouts),
        initial=sum((len(r.indices) - len(r.pending)) * turns[id(r)] for r in rollouts),
        disable=not progress,
        desc=f"{agent.name} on {envs}",
        unit="turn",
    )

    def show_episodes() -> None:
        done = sum(len(r.finished) for r in rollouts)
        bar.set_postfix_str(f"{done}/{total} episodes", refresh=False)

    show_episodes()
    while live:
        for chunk in _chunks(live, batch_size or len(live)):
            _play_turn([episode for _, episode in chunk], agent)
            bar.update(len(chunk))
            for rollout_, episode in chunk:
                if episode.done:
                    rollout_.finished[episode.record.index] = episode.record
                    if rollout_.output:
                        append_record(rollout_.output, episode.record)
                    bar.update(max(0, turns[id(rollout_)] - len(episode.record.turns)))
            show_episodes()
        live = [(r, episode) for r, episode in live if not episode.done]
    bar.close()


def _make_env(env_id: str, env_kwargs: dict[str, Any]) -> MultiTurnEnv:
    env = rise_gym.make(env_id, **env_kwargs).unwrapped
    if not isinstance(env, MultiTurnEnv):
        raise TypeError(f"{env_id} is not a rise-gym multi-turn environment")
    return env


def _problem_indices(available: int, wanted: int, seed: int, shuffle: bool) -> list[int]:
    if not 1 <= wanted <= available:
        raise ValueError(
            f"num_episodes={wanted} but the environment has {available} problems; "
            f"choose 1..{available}"
        )
    if shuffle:
        return sorted(int(i) for i in np.random.default_rng(seed).permutation(available)[:wanted])
    return list(range(wanted))


def _play_turn(episodes: Sequence[_Episode], agent: Agent) -> None:
    started = time.perf_counter()
    responses = agent.act([episode.observation for episode in episodes])
    if len(responses) != len(episodes):
        raise ValueError(
            f"agent {agent.name!r} returned {len(responses)} responses "
            f"for {len(episodes)} observations; act() must return one per observation"
        )
    share = (time.perf_counter() - started) / len(episodes)
    for episode, response in zip(episodes, responses):
        action = as_action(response)
        observation, _, terminated, truncated, info = episode.env.step(action.text)
        episode.observation = observation
        episode.record.turns.append(_turn_record(episode.env, action, info))
        episode.record.wall_time += share
        episode.done = terminated or truncated


def _turn_record(env: MultiTurnEnv, action: Action, info: dict[str, Any]) -> TurnRecord:
    samples = None
    if action.samples is not None:
        samples = []
        for text in action.samples:
            grade = env.grade(text)
            samples.append(Sample(answer=grade.answer, correct=grade.correct))
    metadata = dict(action.metadata)
    if not info["gradable"]:
        metadata["gradable"] = False
    if info.get("feedback"):  # what the environment told the model about this answer
        metadata["env_feedback"] = info["feedback"]
    return TurnRecord(
        turn=info["turn"],
        response=action.text,
        answer=info["answer"],
        correct=info["correct"],
        llm_calls=action.llm_calls,
        generated_tokens=action.generated_tokens,
        samples=samples,
        metadata=metadata,
    )


def _chunks(items: Sequence[T], size: int) -> list[Sequence[T]]:
    return [items[start : start + size] for start in range(0, len(items), size)]
