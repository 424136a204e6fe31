"""Every agent on every registered text environment, with a tiny model, end to end."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents import FunctionAgent, GLoRE, ParallelSampling, SelfRefine, SequentialRetry, rollout
from agents.llm.base import SamplingParams
from rise_gym import ENV_IDS
from rise_gym.metrics import summarize

FIXTURES = Path(__file__).parent / "fixtures"
TEXT_ENVS = sorted(env_id for env_id in ENV_IDS if env_id != "RISE-Stopping-v0")
ENV_KWARGS = {
    "RISE-MBPP-v0": {"data_files": FIXTURES / "mbpp_sample.jsonl"},
    "RISE-CoNaLa-v0": {"data_files": FIXTURES / "conala_sample.jsonl"},
}
GREEDY = SamplingParams(max_new_tokens=6)
SAMPLED = SamplingParams(max_new_tokens=6, temperature=1.0, seed=0)


@pytest.fixture(scope="module")
def tiny_llm(tiny_model_dir, torch_one_thread):
    from agents.llm import make_llm

    return make_llm(str(tiny_model_dir))


def build(agent_name: str, llm):
    if agent_name == "sequential":
        return SequentialRetry(llm, GREEDY)
    if agent_name == "parallel":
        return ParallelSampling(llm, k=3, params=SAMPLED)
    if agent_name == "glore":
        return GLoRE(llm, GREEDY)
    return SelfRefine(llm, GREEDY)


@pytest.mark.parametrize("env_id", TEXT_ENVS)
@pytest.mark.parametrize("agent_name", ["sequential", "parallel", "self-refine", "glore"])
def test_every_agent_runs_on_every_env(env_id, agent_name, tiny_llm):
    agent = build(agent_name, tiny_llm)
    kwargs = {**ENV_KWARGS.get(env_id, {}), "max_turns": 2}
    records = rollout(env_id, agent, num_episodes=2, env_kwargs=kwargs, progress=False)
    turns = 1 if agent_name == "parallel" else 2
    assert [len(r.turns) for r in records] == [turns, turns]
    for record in records:
        assert record.env_id == env_id and record.agent == agent.name
        for turn in record.turns:
            assert isinstance(turn.response, str)
            assert turn.correct in (True, False)
            assert 0 < turn.generated_tokens
    if agent_name == "parallel":
        assert all(len(r.turns[0].samples) == 3 for r in records)
        figures = summarize(records, max_turns=1)
        assert {"m3@t1", "p3@t1"} <= set(figures)


def test_compute_is_counted_for_equal_compute_comparisons(tiny_llm):
    kwargs = {"difficulty": 1, "max_turns": 3}
    costs = {}
    for agent_name in ("sequential", "parallel", "self-refine"):
        agent = build(agent_name, tiny_llm)
        records = rollout(
            "RISE-Arithmetic-v0", agent, num_episodes=2, env_kwargs=kwargs, progress=False
        )
        costs[agent_name] = [[t.llm_calls for t in r.turns] for r in records]
    assert costs["sequential"] == [[1, 1, 1]] * 2
    assert costs["parallel"] == [[3]] * 2  # k = 3 samples at turn 1 = 3 sequential turns
    assert costs["self-refine"] == [[1, 2, 2]] * 2  # feedback + refinement after turn 1


def test_parallel_sampling_submits_the_majority_answer():
    class ScriptedLLM:
        name = "scripted"

        def generate(self, conversations, params, adapter=None):
            from agents.llm.base import Completion, Generation

            texts = ["\\boxed{7}", "\\boxed{5}", "\\boxed{5}"]
            return [Generation([Completion(t, 3) for t in texts]) for _ in conversations]

    agent = ParallelSampling(ScriptedLLM(), k=3)  # type: ignore[arg-type]
    action = agent.act([[{"role": "user", "content": "q"}]])[0]
    assert action.text == "\\boxed{5}" and action.samples == [
        "\\boxed{7}",
        "\\boxed{5}",
        "\\boxed{5}",
    ]
    assert (action.llm_calls, action.generated_tokens) == (3, 9)


def test_self_refine_asks_for_feedback_on_its_last_answer_then_refines():
    seen = []

    class RecordingLLM:
        name = "recording"

        def generate(self, conversations, params, adapter=None):
            from agents.llm.base import Completion, Generation

            seen.append([c[-1]["content"] for c in conversations])
            return [Generation([Completion(f"reply {len(seen)}", 2)]) for _ in conversations]

    agent = SelfRefine(RecordingLLM(), feedback_prompt="CRITIQUE", refine_prompt="REFINE")  # type: ignore[arg-type]
    first = [{"role": "user", "content": "q"}]
    later = [*first, {"role": "assistant", "content": "a1"}, {"role": "user", "content": "retry"}]
    actions = agent.act([first, later])
    assert seen == [["q"], ["CRITIQUE"], ["REFINE"]]
    assert actions[0].text == "reply 1" and actions[0].llm_calls == 1
    assert actions[1].text == "reply 3" and actions[1].llm_calls == 2
    assert actions[1].metadata["feedback"] == "reply 2" and actions[1].generated_tokens == 4


def test_parallel_sampling_needs_two_samples():
    with pytest.raises(ValueError, match="SequentialRetry"):
        ParallelSampling(None, k=1)  # type: ignore[arg-type]


def test_a_plain_function_is_an_agent():
    agent = FunctionAgent(lambda conversation: "\\boxed{0}", name="zero")
    records = rollout(
        "RISE-Arithmetic-v0", agent, num_episodes=3, env_kwargs={"max_turns": 1}, progress=False
    )
    assert [r.agent for r in records] == ["zero"] * 3
