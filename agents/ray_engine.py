"""The Ray engine: a rollout's episodes shared among actors on a Ray cluster.

`run_ray` splits a `Rollout`'s pending problems into shards, one per actor: one actor
per GPU of the cluster (``num_gpus=1`` each), or one per CPU where it has no GPU. Each
actor gets its own copy of the agent, in which every `LazyLLM` travels as the recipe
that builds it (never as loaded weights), so each actor loads its own model and plays
its shard with the batched or async engine exactly as one process would. Every
finished episode streams back to the driver as it ends, and the driver alone appends
it to the episodes file: the same records, settings and resume as a single-process run
(the engine is not one of the settings, so either run resumes the other's file) and,
with greedy decoding, the same turns (sharding changes only which episodes share a
batch, and padding does not change greedy results).

An actor that dies (pre-empted, killed, out of memory, its node lost) loses no episode
it has streamed: its unfinished problems go to a fresh actor, and a problem already
written is never written again. A problem whose actors die `MAX_ATTEMPTS` times stops
the run; an error raised by the agent or the environment stops it at once. Either way
the finished episodes are in the file, and the next run resumes from them.

Select it with ``evaluate(..., ray_address=ADDRESS)`` or the leaderboard's
``ray_address``, where ADDRESS is what `ray.init` takes: ``"auto"`` (the cluster that
``ray start`` made this machine part of), ``"ray://HOST:10001"`` (a remote cluster,
through Ray Client) or ``"local"`` (a new cluster on this machine). A process already
connected (`ray.init` called before) keeps its connection. Every node needs rise-gym
installed, the model (a hub id or a path every node can read) and, for a RISE adapter,
the adapter's folder at the same path.
"""

from __future__ import annotations

import io
import pickle
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import ray
from ray import ObjectRefGenerator, cloudpickle
from ray.exceptions import ObjectLostError, RayActorError, WorkerCrashedError

from agents.async_rollout import _IN_PROCESS
from agents.llm.base import LLM, Generation, SamplingParams
from agents.llm.factory import LazyLLM
from agents.rollout import Rollout
from rise_gym.records import EpisodeRecord, append_record
from rise_gym.spaces import Conversation

MAX_ATTEMPTS = 3
"""Most actors that may die while a problem is unfinished before the run stops."""


def run_ray(
    plan: Rollout,
    *,
    address: str,
    batch_size: int | None = None,
    progress: bool = True,
    engine: str = "batched",
) -> list[EpisodeRecord]:
    """Play a rollout's pending episodes on Ray actors (see the module's docstring).

    Args:
        plan: The episodes, as `agents.rollout.plan_rollout` checked them.
        address: The cluster, as `ray.init` takes it (``"auto"``, ``"ray://HOST:PORT"``,
            ``"local"``); ignored when this process is already connected.
        batch_size: Each actor's ``batch_size`` (see `agents.rollout.rollout`).
        progress: Show a progress bar of finished episodes.
        engine: The engine every actor plays its shard with (``"batched"`` or ``"async"``).

    Returns:
        Every record of the plan (reused and new), in problem order.

    Raises:
        ValueError: The agent cannot be sent to the actors (its model is loaded in this
            process, or it holds something that cannot be pickled); the message names
            the fix. Also any error the agent or the environment raises in an actor.
        RuntimeError: A problem's actors died `MAX_ATTEMPTS` times, or an actor failed
            to start.
    """
    pending = plan.pending
    if not pending:
        return [plan.finished[index] for index in plan.indices]
    recipe = _portable(plan)
    if not ray.is_initialized():
        ray.init(address=address)
    actors, gpus_each = _workers(len(pending))
    worker_class = ray.remote(num_cpus=1, num_gpus=gpus_each)(_ShardWorker)

    def start(indices: list[int]) -> None:
        worker: Any = worker_class.remote(recipe)
        stream = worker.play.remote(indices, batch_size=batch_size, engine=engine)
        running[stream] = _Shard(worker, indices, stream)

    running: dict[ObjectRefGenerator, _Shard] = {}
    attempts = dict.fromkeys(pending, 0)
    bar = plan.episode_bar(len(pending), f"ray, {actors} actors", progress=progress)
    try:
        for number in range(actors):
            start(pending[number::actors])
        while running:
            [ready], _ = ray.wait(list(running), num_returns=1)
            shard = running[ready]
            try:
                record: EpisodeRecord = ray.get(next(shard.stream))
            except StopIteration:
                del running[ready]
                ray.kill(shard.worker)
                continue
            except (RayActorError, ObjectLostError) as error:
                del running[ready]
                ray.kill(shard.worker)
                left = [index for index in shard.indices if index not in plan.finished]
                _check_attempts(left, attempts, error)
                if left:
                    start(left)
                continue
            if record.index in plan.finished:
                continue  # never write a problem twice
            plan.finished[record.index] = record
            if plan.output:
                append_record(plan.output, record)
            bar.update(1)
    finally:  # on an error, stop every actor; the finished episodes are saved
        for shard in running.values():
            ray.kill(shard.worker)
        bar.close()
    return [plan.finished[index] for index in plan.indices]


def _portable(plan: Rollout) -> bytes:
    """``plan`` without its episodes, pickled for the actors: each `LazyLLM` as its recipe.

    Raises:
        ValueError: The agent generates with a model loaded in this process, or holds
            something that cannot be pickled.
    """
    return _pickled(replace(plan, indices=[], finished={}, output=None), plan.agent.name)


def _pickled(obj: Any, name: str) -> bytes:
    """``obj`` pickled for Ray workers, each `LazyLLM` as its recipe.

    Raises:
        ValueError: ``obj`` generates with a model loaded in this process, or holds
            something that cannot be pickled; ``name`` says what it is.
    """
    buffer = io.BytesIO()
    try:
        _AgentPickler(buffer).dump(obj)
    except (TypeError, pickle.PicklingError) as error:
        raise ValueError(
            f"{name!r} cannot be sent to Ray workers ({error}); build it on a back end "
            "the workers can rebuild, e.g. LazyLLM(partial(make_llm, MODEL))"
        ) from error
    return buffer.getvalue()


def generate_ray(
    llm: LLM,
    conversations: Sequence[Conversation],
    params: SamplingParams,
    *,
    address: str,
    adapter: str | None = None,
) -> list[Generation]:
    """``llm.generate`` with the conversations shared among Ray tasks.

    One task per GPU of the cluster (per CPU where it has none), each rebuilding ``llm``
    from its recipe (a `LazyLLM`, or an object that needs no loaded model, such as a
    scripted expert) and answering every n-th conversation; the answers come back in
    the order of ``conversations``. A task whose worker dies is retried, up to
    `MAX_ATTEMPTS` times. RISE relabels its visited states with it.

    Raises:
        ValueError: ``llm`` is a model loaded in this process, or cannot be pickled.
        RuntimeError: A shard's workers died `MAX_ATTEMPTS` times.
    """
    if not conversations:
        return []
    recipe = _pickled(llm, getattr(llm, "name", type(llm).__name__))
    if not ray.is_initialized():
        ray.init(address=address)
    workers, gpus_each = _workers(len(conversations))
    task = ray.remote(num_cpus=1, num_gpus=gpus_each, max_retries=MAX_ATTEMPTS - 1)(_generate_shard)
    shards = [list(conversations[number::workers]) for number in range(workers)]
    try:
        answered = ray.get([task.remote(recipe, shard, params, adapter) for shard in shards])
    except (WorkerCrashedError, RayActorError, ObjectLostError) as error:
        raise RuntimeError(
            f"Ray workers died {MAX_ATTEMPTS} times while generating ({error}); look in "
            "the workers' logs (/tmp/ray/session_latest/logs) for why (out of memory?)"
        ) from error
    generations: list[Generation] = [None] * len(conversations)  # type: ignore[list-item]
    for number, shard_generations in enumerate(answered):
        generations[number::workers] = shard_generations
    return generations


def _workers(items: int) -> tuple[int, int]:
    """How many Ray workers share ``items``, and the GPUs each takes (one CPU each).

    One per GPU of the cluster, or one per CPU where it has no GPU; never more than
    ``items``.
    """
    gpus = int(ray.cluster_resources().get("GPU", 0))
    count = min(items, gpus or max(1, int(ray.cluster_resources().get("CPU", 1))))
    return count, 1 if gpus else 0


def _generate_shard(
    recipe: bytes, conversations: list[Conversation], params: SamplingParams, adapter: str | None
) -> list[Generation]:
    """A Ray task: rebuild the LLM and answer one shard of conversations."""
    llm: LLM = cloudpickle.loads(recipe)
    try:
        return llm.generate(conversations, params, adapter=adapter)
    finally:
        llm.close()


@dataclass
class _Shard:
    """An actor, the problems it was given and the stream of their records."""

    worker: Any
    indices: list[int]
    stream: ObjectRefGenerator


class _AgentPickler(cloudpickle.CloudPickler):
    """Pickles a `LazyLLM` as the recipe that builds it and refuses loaded models."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, LazyLLM):
            return LazyLLM, (obj._build,)
        name = _IN_PROCESS.get(type(obj).__module__)
        if name is not None and type(obj).__name__ == name:
            raise ValueError(
                f"the agent generates with a {name} loaded in this process, and each Ray "
                f"actor loads its own model: build the agent on LazyLLM(partial(make_llm, "
                "MODEL, ...)), as the leaderboard does, and do not load it here"
            )
        return super().reducer_override(obj)


class _ShardWorker:
    """A Ray actor: plays shards of one rollout, streaming each episode as it ends."""

    def __init__(self, recipe: bytes):
        """Rebuild the rollout (and its agent, whose model loads on first use)."""
        self.plan: Rollout = cloudpickle.loads(recipe)

    def play(
        self, indices: list[int], *, batch_size: int | None, engine: str
    ) -> Iterator[EpisodeRecord]:
        """Play the problems ``indices``; yield each record when its episode ends."""
        finished = _Streamed()
        shard = replace(self.plan, indices=indices, finished=finished)

        def run() -> None:
            try:
                shard.run(batch_size=batch_size, progress=False, engine=engine)
            except BaseException as error:  # re-raised in the actor's task below
                finished.queue.put(error)
            else:
                finished.queue.put(None)

        threading.Thread(target=run, name="shard", daemon=True).start()
        while (item := finished.queue.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item


class _Streamed(dict[int, EpisodeRecord]):
    """Finished episodes by problem index; each also goes on ``queue`` when added.

    The shard's thread puts None on ``queue`` when it ends, or the error that ended it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.queue: queue.Queue[EpisodeRecord | BaseException | None] = queue.Queue()

    def __setitem__(self, index: int, record: EpisodeRecord) -> None:
        super().__setitem__(index, record)
        self.queue.put(record)


def _check_attempts(left: list[int], attempts: dict[int, int], error: Exception) -> None:
    """Count one more lost actor for each problem in ``left``; stop at `MAX_ATTEMPTS`.

    Raises:
        RuntimeError: An actor failed to start (it would fail again), or a problem has
            lost `MAX_ATTEMPTS` actors.
    """
    cause = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if isinstance(error, RayActorError) and error.actor_init_failed:
        raise RuntimeError(
            f"a Ray actor failed to start ({cause}); check that every node has rise-gym "
            "installed and can read the model"
        ) from error
    for index in left:
        attempts[index] += 1
    worst = [index for index in left if attempts[index] >= MAX_ATTEMPTS]
    if worst:
        raise RuntimeError(
            f"Ray actors died {MAX_ATTEMPTS} times while playing problems {worst} (last: "
            f"{cause}); the finished episodes are saved and a new run resumes them. Look in "
            "the actors' logs (/tmp/ray/session_latest/logs) for why (out of memory?)"
        ) from error
