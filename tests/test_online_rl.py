"""Online multi-turn RL (GRPO through TRL) on the tiny model: sequences, masks, advantages, runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("trl")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from agents.llm.base import SamplingParams  # noqa: E402
from agents.llm.chat import chat_prompt_ids  # noqa: E402
from agents.llm.transformers_backend import TransformersLLM  # noqa: E402
from agents.online_rl import (  # noqa: E402
    MultiTurnGRPO,
    OnlineRLConfig,
    episode_return,
    episode_sequence,
    final_conversation,
    play_groups,
)
from agents.sequential import SequentialRetry  # noqa: E402
from rise_gym.envs.base import MultiTurnEnv  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_one_thread")

ENV_ID = "RISE-Arithmetic-v0"
ENV_KWARGS = {"difficulty": 4}


def tiny_config(output_dir: Path, **overrides: Any) -> OnlineRLConfig:
    settings: dict[str, Any] = dict(
        max_turns=2,
        num_generations=4,
        problems_per_step=2,
        train_problems=4,
        max_steps=1,
        max_new_tokens=4,
        learning_rate=1e-2,
        save_steps=1,
        output_dir=output_dir,
    )
    return OnlineRLConfig(**{**settings, **overrides})


def even_first_token(completion_ids: list[list[int]], **_: Any) -> list[float | None]:
    """1.0 when the first response starts with an even token id: half the vocabulary."""
    return [1.0 if ids[0] % 2 == 0 else 0.0 for ids in completion_ids]


def played_episode(model_dir: Path) -> tuple[Any, list[dict[str, str]], Any]:
    """A two-turn episode played by the tiny model: the tokenizer, conversation, record."""
    llm = TransformersLLM(str(model_dir))
    player = SequentialRetry(llm, SamplingParams(max_new_tokens=6, temperature=1.0, seed=0))
    env_kwargs = {**ENV_KWARGS, "split": "train", "max_turns": 2, "history_window": None}
    [record] = play_groups(ENV_ID, env_kwargs, player, [0], seed=0)
    import rise_gym

    env = rise_gym.make(ENV_ID, **env_kwargs).unwrapped
    assert isinstance(env, MultiTurnEnv)
    return llm, final_conversation(env, record), record


# ---- credit assignment ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("correct", "credit", "discount", "bonus", "expected"),
    [
        ([False, True], "final", 1.0, 0.0, 1.0),
        ([True, False], "final", 1.0, 0.0, 0.0),
        ([False, True], "final", 1.0, 0.5, 1.5),
        ([True, False], "final", 1.0, 0.5, -0.5),
        ([True, True], "final", 1.0, 0.5, 1.0),
        ([True, False, True], "discounted", 0.5, 0.0, 1.0 + 0.25),
        ([False, True, True], "discounted", 0.9, 0.2, 0.9 + 0.81 + 0.2),
    ],
)
def test_episode_return_by_hand(
    correct: list[bool], credit: str, discount: float, bonus: float, expected: float
) -> None:
    assert episode_return(correct, credit, discount=discount, bonus=bonus) == pytest.approx(
        expected
    )


def test_config_and_return_refuse_bad_input() -> None:
    with pytest.raises(ValueError, match="num_generations must be >= 2"):
        OnlineRLConfig(num_generations=1)
    with pytest.raises(ValueError, match="credit must be one of"):
        OnlineRLConfig(credit="mean")
    with pytest.raises(ValueError, match="set those fields instead"):
        OnlineRLConfig(grpo_arguments={"learning_rate": 1.0})
    with pytest.raises(ValueError, match="at least one turn"):
        episode_return([])


# ---- sequences and masks -------------------------------------------------------------


def test_episode_tokens_are_the_chat_template_rendering(tiny_model_dir: Path) -> None:
    llm, conversation, record = played_episode(tiny_model_dir)
    tokenizer = llm.tokenizer
    assert [m["role"] for m in conversation][-3:] == ["assistant", "user", "assistant"]
    stopped = [turn.metadata["finish_reason"] == "stop" for turn in record.turns]
    sequence = episode_sequence(tokenizer, conversation, stopped, end_token_ids=llm.eos_token_ids)
    rendered = tokenizer(
        tokenizer.apply_chat_template(conversation, tokenize=False), add_special_tokens=False
    )["input_ids"]
    ids = sequence.prompt_ids + sequence.completion_ids
    assert ids == rendered[: len(ids)]
    # what is left after the last response is template only (no model token)
    tail = tokenizer.decode(rendered[len(ids) :])
    assert tail.strip() in ("", "<|im_end|>")
    # the prompt is the opening prompt, ready for the reply
    opening = tokenizer.apply_chat_template(
        conversation[:-3], tokenize=False, add_generation_prompt=True
    )
    assert tokenizer.decode(sequence.prompt_ids) == opening
    # the mask covers exactly the responses (and the end token of those the model ended)
    model_tokens = [t for t, m in zip(sequence.completion_ids, sequence.env_mask) if m]
    expected = "".join(
        turn.response + ("<|im_end|>" if ended else "")
        for turn, ended in zip(record.turns, stopped)
    )
    assert tokenizer.decode(model_tokens) == expected
    env_tokens = [t for t, m in zip(sequence.completion_ids, sequence.env_mask) if not m]
    assert "Try again" in tokenizer.decode(env_tokens) or "again" in tokenizer.decode(env_tokens)


def test_hand_written_conversation_is_masked_on_responses_only(tiny_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    conversation = [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "5"},
        {"role": "user", "content": "Wrong, try again."},
        {"role": "assistant", "content": "The answer is 4"},
    ]
    sequence = episode_sequence(
        tokenizer, conversation, [True, False], end_token_ids=[tokenizer.eos_token_id]
    )
    model = [t for t, m in zip(sequence.completion_ids, sequence.env_mask) if m]
    env = [t for t, m in zip(sequence.completion_ids, sequence.env_mask) if not m]
    assert tokenizer.decode(model) == "5<|im_end|>The answer is 4"
    assert "Wrong, try again." in tokenizer.decode(env)
    assert sequence.completion_ids[-1] != tokenizer.eos_token_id  # cut: not the model's end
    with pytest.raises(ValueError, match="stopped has 1 flags"):
        episode_sequence(tokenizer, conversation, [True], end_token_ids=[0])


def test_live_policy_cache_never_serves_old_weights(tiny_model_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir, padding_side="left")
    llm = TransformersLLM.from_model(model, tokenizer)
    params = SamplingParams(max_new_tokens=6)
    opening = [{"role": "user", "content": "What is 3*7?"}]
    first = llm.generate([opening], params)[0].completions[0].text
    retry = {"role": "user", "content": "Again"}
    later = [*opening, {"role": "assistant", "content": first}, retry]
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.3)
    llm.clear_prefix_cache()
    cached = llm.generate([later], params)[0].completions[0].text
    fresh = TransformersLLM.from_model(model, tokenizer, prefix_cache_bytes=0)
    assert cached == fresh.generate([later], params)[0].completions[0].text


# ---- the trainer's code path ---------------------------------------------------------


@pytest.fixture(scope="module")
def trainer(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = tmp_path_factory.mktemp("online-rl-trainer")
    agent = MultiTurnGRPO(
        str(tiny_model_dir),
        tiny_config(folder, scale_rewards="group"),
        reward_funcs=[even_first_token],
    )
    from agents.online_rl import Progress

    return agent._trainer(ENV_ID, ENV_KWARGS, Progress(folder / "progress.json"))


def test_group_relative_advantages_by_hand(trainer: Any) -> None:
    batch = [row for row in trainer.train_dataset.select(range(2)) for _ in range(4)]
    trainer.model.train()
    output = trainer._generate_and_score_completions(batch)
    totals = torch.tensor([row["episode_return"] for row in batch]) + torch.tensor(
        even_first_token([list(ids) for ids in _unpadded(output)])
    )
    groups = totals.view(2, 4)
    expected = (groups - groups.mean(1, keepdim=True)) / (groups.std(1, keepdim=True) + 1e-4)
    assert torch.allclose(output["advantages"].cpu(), expected.flatten(), atol=1e-5)
    assert output["tool_mask"].sum() < output["completion_mask"].sum()  # env tokens masked


def _unpadded(output: dict[str, Any]) -> list[list[int]]:
    return [
        ids[mask.bool()].tolist()
        for ids, mask in zip(output["completion_ids"], output["completion_mask"])
    ]


def test_env_tokens_do_not_reach_the_loss(trainer: Any) -> None:
    prompt = torch.tensor([[1, 2, 3, 4]])
    completion = torch.tensor([[10, 11, 12, 13, 14, 15]])
    inputs = {
        "prompt_ids": prompt,
        "prompt_mask": torch.ones_like(prompt),
        "completion_ids": completion,
        "completion_mask": torch.ones_like(completion),
        "tool_mask": torch.tensor([[1, 1, 1, 0, 0, 0]]),
        "advantages": torch.tensor([1.0]),
        "num_items_in_batch": torch.tensor(3.0),
        "old_per_token_logps": torch.zeros(1, 6),  # the loss then depends on the logps
    }
    trainer.current_gradient_accumulation_steps = 1  # as Trainer.training_step sets it

    def loss_and_grads(ids: torch.Tensor) -> tuple[float, list[torch.Tensor]]:
        trainer.model.zero_grad()
        loss = trainer.compute_loss(trainer.model, {**inputs, "completion_ids": ids})
        loss.backward()
        params = [p for p in trainer.model.parameters() if p.requires_grad]
        return loss.item(), [p.grad.clone() for p in params if p.grad is not None]

    base_loss, base_grads = loss_and_grads(completion)
    env_changed = completion.clone()
    env_changed[0, -1] = 99  # an environment token (the last: no model token follows it)
    env_loss, env_grads = loss_and_grads(env_changed)
    model_changed = completion.clone()
    model_changed[0, 1] = 99  # a model token
    model_loss, model_grads = loss_and_grads(model_changed)
    assert env_loss == base_loss
    assert all(torch.equal(a, b) for a, b in zip(base_grads, env_grads))
    assert model_loss != base_loss
    assert not all(torch.equal(a, b) for a, b in zip(base_grads, model_grads))


# ---- whole runs ----------------------------------------------------------------------


@pytest.mark.slow
def test_learn_raises_the_likelihood_of_rewarded_responses(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    config = tiny_config(tmp_path / "run", max_steps=8, learning_rate=3e-2, temperature=1.5)
    agent = MultiTurnGRPO(str(tiny_model_dir), config, reward_funcs=[even_first_token])
    before = _even_first_token_probability(tiny_model_dir, None)
    agent.learn(ENV_ID, ENV_KWARGS)
    after = _even_first_token_probability(tiny_model_dir, agent.adapter)
    assert after > before + 0.03, (before, after)
    assert agent.generated_tokens > 0
    assert (Path(agent.adapter) / "adapter_config.json").is_file()


def _even_first_token_probability(model_dir: Path, adapter: str | None) -> float:
    """Mean probability, over the first 4 training openings, of an even first token."""
    import rise_gym

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    env = rise_gym.make(ENV_ID, **ENV_KWARGS, split="train").unwrapped
    probabilities = []
    for index in range(4):
        opening, _ = env.reset(options={"index": index})
        [ids] = chat_prompt_ids(tokenizer, [opening])
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -1]
        probabilities.append(torch.softmax(logits, -1)[::2].sum().item())
    return sum(probabilities) / len(probabilities)


def test_run_folder_refuses_other_settings_and_resumes(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "run"
    model = str(tiny_model_dir)
    MultiTurnGRPO(model, tiny_config(folder, num_generations=2, problems_per_step=1)).learn(
        ENV_ID, ENV_KWARGS
    )
    assert (folder / "checkpoints" / "checkpoint-1").is_dir()
    other = tiny_config(folder, num_generations=2, problems_per_step=1, credit="discounted")
    with pytest.raises(ValueError, match="online_rl.credit"):
        MultiTurnGRPO(model, other).learn(ENV_ID, ENV_KWARGS)
    longer = tiny_config(folder, num_generations=2, problems_per_step=1, max_steps=2)
    agent = MultiTurnGRPO(model, longer).learn(ENV_ID, ENV_KWARGS)
    steps = [
        json.loads(line)["settings"]["global_step"]
        for line in (folder / "episodes.jsonl").read_text().splitlines()
    ]
    assert sorted(steps) == [0, 0, 1, 1]  # step 0 came from the checkpoint, not replayed
    progress = json.loads((folder / "progress.json").read_text())
    assert progress["finished_steps"] == 2
    assert agent.generated_tokens == progress["generated_tokens"] > 0
