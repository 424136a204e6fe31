"""The Ray engine on a local 2-CPU cluster with the tiny model: the records of one
process, nothing lost or duplicated when an actor dies mid-run, and resume after an
interrupted run.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray", reason="needs ray: pip install 'rise-gym[ray]'")

from agents import FunctionAgent, SequentialRetry  # noqa: E402
from agents.evaluate import Evaluation, evaluate, plan_evaluation  # noqa: E402
from agents.leaderboard import LeaderboardConfig, run_leaderboard  # noqa: E402
from agents.llm import SamplingParams  # noqa: E402
from agents.llm.factory import LazyLLM, make_llm  # noqa: E402
from rise_gym.records import read_records  # noqa: E402
from rise_gym.spaces import Conversation  # noqa: E402

ENV = "RISE-Arithmetic-v0"
PROBLEMS = 6
TURNS = 2
RUN: dict[str, Any] = {"num_problems": PROBLEMS, "max_turns": TURNS, "progress": False}
STOP_AT_CALL = 5
"""With batch_size=1 each of 2 actors makes 3 calls a turn: its first episode ends at call 4."""


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    """A local Ray cluster of 2 CPUs (2 actors), whose workers can unpickle this module."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    ray.shutdown()


@pytest.fixture(scope="module")
def tiny_agent(tiny_model_dir: Path) -> SequentialRetry:
    """Greedy sequential retries on the tiny model, built where it first generates."""
    llm = LazyLLM(partial(make_llm, str(tiny_model_dir)))
    return SequentialRetry(llm, SamplingParams(max_new_tokens=12), name="sequential")


@pytest.fixture(scope="module")
def one_process(
    tiny_agent: SequentialRetry, torch_one_thread: None, tmp_path_factory: pytest.TempPathFactory
) -> Evaluation:
    """The single-process evaluation the Ray runs must reproduce."""
    output = tmp_path_factory.mktemp("one-process") / "episodes.jsonl"
    return evaluate(ENV, tiny_agent, output=output, **RUN)


def _outcomes(records: Sequence[Any]) -> list[tuple[Any, ...]]:
    """What greedy decoding decides, in problem order: every turn's text, answer, grade, cost.

    Not the timing, nor the mean log-probabilities: a shard batches fewer episodes
    together, which changes their floating-point sums in the last digits.
    """
    return [
        (
            record.problem_id,
            record.index,
            record.settings,
            [
                (t.turn, t.response, t.answer, t.correct, t.llm_calls, t.generated_tokens)
                for t in record.turns
            ],
        )
        for record in sorted(records, key=lambda record: record.index)
    ]


class Interrupts:
    """An agent that, in the first actor to reach its `STOP_AT_CALL`-th ``act``, stops
    that actor once ``output`` holds a record: with ``kill`` it is SIGKILLed (pre-empted),
    otherwise ``act`` raises. ``marker`` (created at most once) says it happened.
    """

    def __init__(self, agent: SequentialRetry, output: Path, marker: Path, *, kill: bool):
        self.agent = agent
        self.name = agent.name
        self.output = output
        self.marker = marker
        self.kill = kill
        self.calls = 0

    def act(self, observations: Sequence[Conversation]) -> list[Any]:
        self.calls += 1
        if self.calls == STOP_AT_CALL and self._first():
            deadline = time.monotonic() + 30
            while not self.output.read_text() and time.monotonic() < deadline:
                time.sleep(0.05)
            if self.kill:
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError("interrupted on purpose")
        return self.agent.act(observations)

    def _first(self) -> bool:
        try:
            os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return False
        return True


def test_greedy_records_equal_the_single_process_run(cluster, tiny_agent, one_process, tmp_path):
    output = tmp_path / "episodes.jsonl"
    distributed = evaluate(ENV, tiny_agent, output=output, ray_address="local", **RUN)
    assert _outcomes(distributed.records) == _outcomes(one_process.records)
    assert distributed.metrics == one_process.metrics
    assert _outcomes(read_records(output)) == _outcomes(one_process.records)
    # same settings: a single-process run resumes the file with nothing left to play
    plan = plan_evaluation(ENV, tiny_agent, num_problems=PROBLEMS, max_turns=TURNS, output=output)
    assert plan.pending == []


def test_an_actor_killed_mid_run_loses_and_duplicates_nothing(
    cluster, tiny_agent, one_process, tmp_path
):
    output, marker = tmp_path / "episodes.jsonl", tmp_path / "killed"
    agent = Interrupts(tiny_agent, output, marker, kill=True)
    records = evaluate(ENV, agent, output=output, batch_size=1, ray_address="local", **RUN).records
    assert marker.exists()  # an actor died mid-run; a fresh one finished its problems
    written = read_records(output)
    assert sorted(record.index for record in written) == list(range(PROBLEMS))
    assert _outcomes(written) == _outcomes(records) == _outcomes(one_process.records)


def test_an_interrupted_run_resumes_where_it_stopped(cluster, tiny_agent, one_process, tmp_path):
    output, marker = tmp_path / "episodes.jsonl", tmp_path / "raised"
    agent = Interrupts(tiny_agent, output, marker, kill=False)
    with pytest.raises(RuntimeError, match="interrupted on purpose"):
        evaluate(ENV, agent, output=output, batch_size=1, ray_address="local", **RUN)
    before = output.read_text().splitlines()
    assert 1 <= len(before) < PROBLEMS
    evaluate(ENV, tiny_agent, output=output, ray_address="local", **RUN)
    after = output.read_text().splitlines()
    assert after[: len(before)] == before  # kept, not played again
    assert sorted(record.index for record in read_records(output)) == list(range(PROBLEMS))
    assert _outcomes(read_records(output)) == _outcomes(one_process.records)


def test_actors_that_keep_dying_stop_the_run_with_the_episodes_saved(cluster, tmp_path):
    def dies(conversation: Conversation) -> str:
        os.kill(os.getpid(), signal.SIGKILL)
        return ""

    with pytest.raises(RuntimeError, match="died 3 times while playing problems \\[0\\]"):
        evaluate(
            ENV,
            FunctionAgent(dies),
            num_problems=1,
            output=tmp_path / "episodes.jsonl",
            ray_address="local",
            progress=False,
        )


def test_a_model_loaded_here_is_refused_with_the_fix(tiny_model_dir, torch_one_thread):
    agent = SequentialRetry(make_llm(str(tiny_model_dir)), name="sequential")
    with pytest.raises(ValueError, match=r"TransformersLLM loaded in this process.*LazyLLM"):
        evaluate(ENV, agent, num_problems=2, ray_address="local", progress=False)


def test_leaderboard_on_ray_writes_the_episodes_of_one_process(cluster, tiny_model_dir, tmp_path):
    def config(folder: str, **ray: Any) -> LeaderboardConfig:
        return LeaderboardConfig(
            model=str(tiny_model_dir),
            envs=(ENV,),
            agents=("self-refine",),  # two calls a turn, both greedy
            num_problems=2,
            max_turns=2,
            max_new_tokens=8,
            output_dir=tmp_path / folder,
            **ray,
        )

    here, distributed = config("here"), config("ray", ray_address="local")
    assert distributed.settings() == here.settings()  # the address is not a setting
    run_leaderboard(here, progress=False)
    run_leaderboard(distributed, progress=False)
    name = f"episodes/self-refine--{ENV}.jsonl"
    expected = read_records(here.run_folder() / name)
    assert _outcomes(read_records(distributed.run_folder() / name)) == _outcomes(expected)


def test_an_empty_ray_address_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="ray_address is empty; pass 'auto'"):
        LeaderboardConfig(ray_address=" ")


def test_the_eval_command_plays_on_ray_and_writes_the_episodes_of_one_process(
    cluster, tiny_model_dir, tmp_path, capsys
):
    from agents.cli import main

    def run(output: Path, *ray: str) -> list[Any]:
        argv = ["eval", "--env", ENV, "--agent", "sequential", "--model", str(tiny_model_dir)]
        argv += ["--num-problems", "2", "--max-turns", "2", "--max-new-tokens", "8"]
        assert main([*argv, "--output", str(output), "--no-progress", *ray]) == 0
        return read_records(output)

    here = run(tmp_path / "here.jsonl")
    distributed = run(tmp_path / "ray.jsonl", "--ray-address", "local")
    assert _outcomes(distributed) == _outcomes(here)
    assert "sequential" in capsys.readouterr().out  # the table of the Ray run


def test_generate_on_ray_answers_in_the_order_of_one_call(cluster, tiny_model_dir, tmp_path):
    from agents.ray_engine import generate_ray

    llm = LazyLLM(partial(make_llm, str(tiny_model_dir), dtype="float32"))
    chats = [[{"role": "user", "content": f"What is {i} + 1?"}] for i in range(5)]
    greedy = SamplingParams(max_new_tokens=6)
    on_ray = generate_ray(llm, chats, greedy, address="local")
    assert [g.texts for g in on_ray] == [g.texts for g in llm.generate(chats, greedy)]
    with pytest.raises(ValueError, match="loaded in this process"):
        generate_ray(llm.load(), chats, greedy, address="local")
    llm.close()


def test_rise_collects_and_evaluates_on_ray_like_one_process(cluster, tiny_model_dir, tmp_path):
    from agents.rise import RISEAgent, RISEConfig, TrainingConfig

    def collect(name: str, ray_address: str | None) -> list[Any]:
        config = RISEConfig(
            boost=False,
            max_turns=2,
            train_problems=3,
            eval_problems=3,
            num_samples=2,
            max_new_tokens=8,
            output_dir=tmp_path / name,
            ray_address=ray_address,
        )
        llm = LazyLLM(partial(make_llm, str(tiny_model_dir), dtype="float32"))
        params = SamplingParams(max_new_tokens=8)
        agent = RISEAgent(llm, tiny_model_dir, config, TrainingConfig(), params=params)
        states = agent._collect(ENV, {"difficulty": 1}, tmp_path / name / "iteration-1", seed=1)
        agent._evaluate(ENV, {"difficulty": 1}, tmp_path / name / "iteration-1")
        return states

    here, on_ray = collect("one-process", None), collect("ray", "local")
    assert len(on_ray) == 3 * 2 and all(state.improved is not None for state in on_ray)
    assert [(s.problem_id, s.turn, s.on_policy.response) for s in on_ray] == [
        (s.problem_id, s.turn, s.on_policy.response) for s in here
    ]
    evaluations = [
        _outcomes(read_records(tmp_path / name / "iteration-1" / "eval.jsonl"))
        for name in ("one-process", "ray")
    ]
    assert evaluations[0] == evaluations[1]
