"""The RISE agent end to end on a tiny model: boost, collect, relabel, train, evaluate, resume."""

from __future__ import annotations

import json

import pytest
import torch

from agents.llm import make_llm
from agents.llm.base import SamplingParams
from agents.rise import RISEAgent, RISEConfig, TrainingConfig
from agents.rise.examples import WeightedExample, tokenize_example
from agents.rise.experts import ArithmeticExpert

ENV = "RISE-Arithmetic-v0"
ENV_KWARGS = {"difficulty": 1, "size": 50}


class CountingLLM:
    """Wraps a back end and counts generate calls (to prove resume does no new work)."""

    def __init__(self, llm):
        self.llm, self.calls, self.name = llm, 0, llm.name

    def generate(self, conversations, params, *, adapter=None):
        self.calls += 1
        return self.llm.generate(conversations, params, adapter=adapter)

    def close(self):
        self.llm.close()


def make_agent(tiny_model_dir, tmp_path, llm):
    config = RISEConfig(
        iterations=1,
        max_turns=2,
        train_problems=4,
        eval_problems=3,
        num_samples=3,
        max_new_tokens=4,
        boost_problems=8,
        output_dir=tmp_path / "run",
    )
    training = TrainingConfig(
        num_epochs=4,
        per_device_batch_size=4,
        learning_rate=3e-2,
        lora_rank=4,
        lora_alpha=8,
        max_seq_length=256,
    )
    return RISEAgent(llm, tiny_model_dir, config, training, params=SamplingParams(max_new_tokens=4))


def mean_target_nll(model_dir, adapter, example) -> float:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    if adapter:
        model = PeftModel.from_pretrained(model, adapter)
    prompt, target = tokenize_example(example, tokenizer)
    ids = torch.tensor([prompt + target])
    labels = torch.tensor([[-100] * len(prompt) + target])
    with torch.no_grad():
        return float(model(input_ids=ids, labels=labels).loss)


def test_learn_runs_every_step_writes_every_artifact_and_resumes(
    tiny_model_dir, tmp_path, torch_one_thread
):
    llm = CountingLLM(make_llm(str(tiny_model_dir)))
    agent = make_agent(tiny_model_dir, tmp_path, llm)
    assert agent.learn(ENV, ENV_KWARGS) is agent
    run = tmp_path / "run"
    for folder in ("boost", "iteration-1"):
        assert (run / folder / "model" / "adapter_config.json").exists()
        metrics = json.loads((run / folder / "metrics.json").read_text())
        assert {"p1@t1", "p1@t2", "m1@t2"} <= set(metrics)
        assert len((run / folder / "eval.jsonl").read_text().splitlines()) == 3
    states = [
        json.loads(line) for line in (run / "iteration-1" / "states.jsonl").read_text().splitlines()
    ]
    assert len(states) >= 4 and all(s["improved"]["source"] == "improved" for s in states)
    assert agent.adapter == str(run / "iteration-1" / "model")
    assert [h["folder"] for h in agent.history] == [str(run / "boost"), str(run / "iteration-1")]

    # the tokens spent making the data: every rollout turn, every relabelling sample
    tokens = json.loads((run / "iteration-1" / "generated_tokens.json").read_text())
    rollouts = [
        json.loads(line)
        for line in (run / "iteration-1" / "rollouts.jsonl").read_text().splitlines()
    ]
    turns = [turn for record in rollouts for turn in record["turns"]]
    assert tokens["collection"] == sum(turn["generated_tokens"] for turn in turns) > 0
    contexts = {json.dumps(state["conversation"]) for state in states}
    assert len(contexts) <= tokens["relabelling"] <= len(contexts) * 3 * 4  # n=3, 4 tokens
    assert agent.generated_tokens == tokens["collection"] + tokens["relabelling"]

    # the boost phase raised the likelihood of the reference solutions it trained on
    from rise_gym import make

    env = make(ENV, split="train", **ENV_KWARGS).unwrapped
    observation, _ = env.reset(options={"index": 0})
    example = WeightedExample(observation, env.problems[0].solution, 1.0)
    before = mean_target_nll(tiny_model_dir, None, example)
    after = mean_target_nll(tiny_model_dir, str(run / "boost" / "model"), example)
    assert after < before - 0.5

    # a second learn() with the same configuration redoes nothing
    calls = llm.calls
    again = make_agent(tiny_model_dir, tmp_path, llm).learn(ENV, ENV_KWARGS)
    assert llm.calls == calls
    assert again.adapter == agent.adapter
    assert again.generated_tokens == agent.generated_tokens


def test_expert_improvement_needs_an_expert(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="expert=make_llm"):
        RISEAgent(None, tiny_model_dir, RISEConfig(improvement="expert"))  # type: ignore[arg-type]


def collecting_agent(tmp_path, **overrides) -> RISEAgent:
    """A RISE agent whose learner is the scripted arithmetic expert (always right)."""
    settings = dict(boost=False, max_turns=3, train_problems=4, num_samples=2, max_new_tokens=64)
    config = RISEConfig(output_dir=tmp_path / "run", **{**settings, **overrides})
    return RISEAgent(ArithmeticExpert(), "unused-base-model", config)


def test_collection_without_the_oracle_stop_visits_states_after_correct_answers(tmp_path):
    states = collecting_agent(tmp_path)._collect(ENV, ENV_KWARGS, tmp_path / "a", seed=1)
    assert sorted(s.turn for s in states) == [1] * 4 + [2] * 4 + [3] * 4
    after_correct = [s for s in states if s.turn > 1]
    assert all(s.previous_reward == 1.0 and s.on_policy.reward == 1.0 for s in after_correct)
    # keeping the right answer is a correct action like any other: weight 1
    examples = collecting_agent(tmp_path)._weighted_examples(after_correct)
    assert examples and all(example.weight == 1.0 for example in examples)

    oracle = collecting_agent(tmp_path, collect_stop_on_correct=True)
    assert {s.turn for s in oracle._collect(ENV, ENV_KWARGS, tmp_path / "b", seed=1)} == {1}


def test_second_turn_shape_relabels_only_the_state_after_the_first_answer(tmp_path):
    agent = collecting_agent(tmp_path, data_shape="second_turn", max_turns=5)
    states = agent._collect(ENV, ENV_KWARGS, tmp_path / "a", seed=1)
    assert sorted(s.turn for s in states) == [1] * 4 + [2] * 4
    assert all((s.improved is not None) == (s.turn == 2) for s in states)


def test_iterations_roll_out_new_problems(tmp_path):
    agent = collecting_agent(tmp_path)
    first = agent._collect(ENV, ENV_KWARGS, tmp_path / "iteration-1", seed=1)
    second = agent._collect(ENV, ENV_KWARGS, tmp_path / "iteration-2", seed=2)
    assert {s.problem_id for s in first} != {s.problem_id for s in second}


def one_step_agent(tiny_model_dir, tmp_path, llm, collector=None, **overrides) -> RISEAgent:
    """A RISE agent without boost that trains one optimizer step per iteration."""
    settings = dict(boost=False, train_problems=2, eval_problems=2, num_samples=2)
    config = RISEConfig(max_new_tokens=4, output_dir=tmp_path / "run", **settings, **overrides)
    training = TrainingConfig(max_steps=1, per_device_batch_size=4, max_seq_length=512)
    params = SamplingParams(max_new_tokens=4)
    return RISEAgent(llm, tiny_model_dir, config, training, params=params, collector=collector)


def test_learn_runs_ten_turns_and_two_iterations(tiny_model_dir, tmp_path, torch_one_thread):
    llm = make_llm(str(tiny_model_dir))
    agent = one_step_agent(tiny_model_dir, tmp_path, llm, iterations=2, max_turns=10)
    agent.learn(ENV, ENV_KWARGS)
    for iteration in (1, 2):
        folder = tmp_path / "run" / f"iteration-{iteration}"
        episodes = [json.loads(line) for line in (folder / "eval.jsonl").read_text().splitlines()]
        assert [len(episode["turns"]) for episode in episodes] == [10, 10]
        assert "m1@t10" in json.loads((folder / "metrics.json").read_text())


def test_first_turn_shape_is_single_turn_data(tmp_path):
    agent = collecting_agent(tmp_path, data_shape="first_turn", data_filter="success")
    states = agent._collect(ENV, ENV_KWARGS, tmp_path / "a", seed=1)
    assert [s.turn for s in states] == [1] * 4 and all(s.improved for s in states)
    assert all(len(e.conversation) == 1 for e in agent._weighted_examples(states))


def test_weak_to_strong_collects_with_one_model_and_trains_another(
    tiny_model_dir, tmp_path, torch_one_thread
):
    strong = CountingLLM(make_llm(str(tiny_model_dir)))
    weak = CountingLLM(ArithmeticExpert())  # model A: every state and action comes from it
    agent = one_step_agent(
        tiny_model_dir, tmp_path, strong, collector=weak, iterations=1, max_turns=2
    )
    agent.learn(ENV, ENV_KWARGS)
    states = (tmp_path / "run" / "iteration-1" / "states.jsonl").read_text().splitlines()
    responses = [json.loads(line)["on_policy"]["response"] for line in states]
    assert responses and all(r.endswith("}.") and "The answer is" in r for r in responses)
    assert weak.calls == 3  # two turns of rollouts, one relabelling call
    assert strong.calls == 2  # only the held-out evaluation's two turns
    adapter = json.loads(
        (tmp_path / "run" / "iteration-1" / "model" / "adapter_config.json").read_text()
    )
    assert adapter["base_model_name_or_path"] == str(tiny_model_dir)  # model B's adapter


def test_an_output_dir_of_other_settings_is_refused(tmp_path):
    collecting_agent(tmp_path)._claim_output_dir(ENV, ENV_KWARGS)
    collecting_agent(tmp_path, iterations=3)._claim_output_dir(ENV, ENV_KWARGS)  # continue
    with pytest.raises(
        ValueError, match=r"other settings \(rise.num_samples\).*another output_dir"
    ):
        collecting_agent(tmp_path, num_samples=5)._claim_output_dir(ENV, ENV_KWARGS)
    with pytest.raises(ValueError, match=r"env_kwargs.difficulty"):
        collecting_agent(tmp_path)._claim_output_dir(ENV, {**ENV_KWARGS, "difficulty": 2})


@pytest.mark.parametrize("section, name", [("rise", "relabel_context"), ("training", "lora_rank")])
def test_a_run_recorded_before_a_setting_existed_resumes_at_its_default(tmp_path, section, name):
    collecting_agent(tmp_path)._claim_output_dir(ENV, ENV_KWARGS)
    record = tmp_path / "run" / "rise_run.json"
    written = json.loads(record.read_text())
    del written[section][name]  # as an earlier release wrote it
    record.write_text(json.dumps(written))
    collecting_agent(tmp_path)._claim_output_dir(ENV, ENV_KWARGS)
    if section == "rise":
        with pytest.raises(ValueError, match=r"other settings \(rise.relabel_context\)"):
            collecting_agent(tmp_path, relabel_context="problem")._claim_output_dir(ENV, ENV_KWARGS)


class RecordingExpert(ArithmeticExpert):
    """The scripted expert, keeping every conversation it was asked to answer."""

    def __init__(self):
        self.asked = []

    def generate(self, conversations, params, *, adapter=None):
        self.asked += conversations
        return super().generate(conversations, params, adapter=adapter)


def test_problem_context_samples_each_problem_once_from_its_opening_prompt(tmp_path):
    config = RISEConfig(
        boost=False,
        max_turns=3,
        train_problems=4,
        num_samples=2,
        max_new_tokens=64,
        improvement="expert",
        relabel_context="problem",
        output_dir=tmp_path / "run",
    )
    expert = RecordingExpert()
    agent = RISEAgent(ArithmeticExpert(), "unused-base-model", config, expert=expert)
    states = agent._collect(ENV, ENV_KWARGS, tmp_path / "a", seed=1)
    openings = {s.problem_id: s.conversation for s in states if s.turn == 1}
    assert len(expert.asked) == len(openings) == 4
    assert sorted(map(str, expert.asked)) == sorted(map(str, openings.values()))
    later = [s for s in states if s.turn > 1]
    assert later and all(s.improved and s.improved.reward == 1.0 for s in later)
    solve = ArithmeticExpert().answer
    assert all(s.improved.response == solve(s.conversation[0]["content"]) for s in later)


def test_unknown_relabel_context_is_refused():
    with pytest.raises(ValueError, match="relabel_context must be one of"):
        RISEConfig(relabel_context="history")


def test_run_folder_doctests():
    import doctest

    import agents.run_folder

    assert doctest.testmod(agents.run_folder).failed == 0
