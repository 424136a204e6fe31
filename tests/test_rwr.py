"""RWR training: tokenisation and masking, the weighted loss, gradient accumulation,
LoRA training end to end, the saved adapter, and resuming (on conftest's tiny model)."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from peft import PeftModel  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    AutoTokenizer,
    TrainingArguments,
)

from agents.rise.examples import (  # noqa: E402
    IGNORE_INDEX,
    RWRCollator,
    RWRDataset,
    WeightedExample,
    tokenize_example,
)
from agents.rise.rwr import RWRTrainer, rwr_weight, sequence_nll  # noqa: E402
from agents.rise.train import TrainingConfig, train_rwr  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture
def tokenizer(tiny_model_dir: Path):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture
def model(tiny_model_dir: Path):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


MULTI_TURN = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is 2+3?"},
    {"role": "assistant", "content": "6"},
    {"role": "user", "content": "That is wrong, try again."},
]

EXAMPLES = [
    WeightedExample(MULTI_TURN, "5", 12.0),
    WeightedExample(user("Name a colour."), "Blue, or perhaps green.", 1.0),
    WeightedExample(user("1+1?"), "2", 3.5),
    WeightedExample(user("Say hi"), "hi there", 0.5),
]


def batch_of(examples, tokenizer, max_seq_length: int = 256) -> dict:
    dataset = RWRDataset(examples, tokenizer, max_seq_length)
    return RWRCollator(tokenizer.pad_token_id)([dataset[i] for i in range(len(dataset))])


def trainer_for(model, tmp_path: Path, **overrides) -> RWRTrainer:
    args = TrainingArguments(
        output_dir=str(tmp_path / "trainer"),
        remove_unused_columns=False,
        report_to="none",
        use_cpu=True,
        **overrides,
    )
    return RWRTrainer(model=model, args=args)


def hand_loss(model, batch: dict, examples_per_step: int) -> torch.Tensor:
    """sum_i w_i mean_t nll_it / examples_per_step, from the full logits, token by token."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    total = torch.tensor(0.0)
    for row, weight in enumerate(batch["weights"]):
        nlls = [
            -log_probs[row, position - 1, int(token)]
            for position, token in enumerate(batch["labels"][row])
            if position > 0 and token != IGNORE_INDEX
        ]
        total = total + weight * torch.stack(nlls).mean()
    return total / examples_per_step


# ---- weights and examples ------------------------------------------------------------


def test_rwr_weight_is_exp_reward_over_tau_with_a_correct_action_weighing_one():
    assert rwr_weight(1.0) == pytest.approx(1.0)
    assert rwr_weight(1.0, tau=0.4) / rwr_weight(0.0, tau=0.4) == pytest.approx(math.e**2.5)
    assert rwr_weight(1.0, tau=0.4, baseline=0.0) == pytest.approx(math.e**2.5)
    with pytest.raises(ValueError, match="tau"):
        rwr_weight(1.0, tau=0.0)


@pytest.mark.parametrize(
    "conversation, weight",
    [([], 1.0), ([*user("q"), {"role": "assistant", "content": "a"}], 1.0), (user("q"), 0.0)],
)
def test_weighted_example_rejects_bad_states_and_weights(conversation, weight):
    with pytest.raises(ValueError):
        WeightedExample(conversation, "a", weight)


def test_training_config_validates():
    with pytest.raises(ValueError, match="lora_rank"):
        TrainingConfig(lora_rank=0)
    with pytest.raises(ValueError, match="max_steps"):
        TrainingConfig(max_steps=0)


# ---- tokenisation and masking --------------------------------------------------------


def test_multi_turn_prompt_is_fully_masked_and_target_ends_with_eos(tokenizer):
    features = RWRDataset([WeightedExample(MULTI_TURN, "5", 2.0)], tokenizer, 256)[0]
    prompt, target = tokenize_example(WeightedExample(MULTI_TURN, "5", 2.0), tokenizer)
    assert features["input_ids"] == prompt + target
    assert features["labels"] == [IGNORE_INDEX] * len(prompt) + target
    assert tokenizer.decode(target) == "5<|im_end|>"
    assert target[-1] == tokenizer.eos_token_id
    # The system prompt, the question, the earlier answer "6" and the retry prompt are context.
    assert tokenizer.decode(prompt) == tokenizer.apply_chat_template(
        MULTI_TURN, tokenize=False, add_generation_prompt=True
    )
    assert features["weight"] == 2.0


def test_long_prompts_lose_their_left_and_long_responses_are_skipped(tokenizer, caplog):
    fits = WeightedExample(user("x" * 100), "short", 1.0)
    too_long = WeightedExample(user("q"), " ".join(["word"] * 50), 1.0)
    with caplog.at_level(logging.WARNING):
        dataset = RWRDataset([fits, too_long], tokenizer, max_seq_length=40)
    assert (len(dataset), dataset.num_truncated, dataset.num_skipped) == (1, 1, 1)
    assert "Skipped 1 of 2" in caplog.text
    features = dataset[0]
    assert len(features["input_ids"]) == 40
    assert tokenizer.decode([t for t in features["labels"] if t != IGNORE_INDEX]) == (
        "short<|im_end|>"
    )
    assert tokenizer.decode(features["input_ids"]).endswith(
        "x<|im_end|>\n<|im_start|>assistant\nshort<|im_end|>"
    )
    with pytest.raises(ValueError, match="No example fits"):
        RWRDataset([too_long], tokenizer, max_seq_length=40)


def test_collator_right_pads_and_passes_weights(tokenizer):
    batch = batch_of(EXAMPLES[:2], tokenizer)
    lengths = batch["attention_mask"].sum(dim=1)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    assert int(lengths.max()) == batch["input_ids"].shape[1]
    short = int(lengths.argmin())
    assert (batch["labels"][short, int(lengths[short]) :] == IGNORE_INDEX).all()
    assert (batch["input_ids"][short, int(lengths[short]) :] == tokenizer.pad_token_id).all()
    assert batch["weights"].tolist() == [12.0, 1.0]
    padded = RWRCollator(tokenizer.pad_token_id, pad_to_multiple_of=8)(
        RWRDataset(EXAMPLES[:2], tokenizer, 256).features
    )
    assert padded["input_ids"].shape[1] % 8 == 0


def test_only_target_positions_affect_the_loss(tokenizer):
    batch = batch_of(EXAMPLES[:3], tokenizer)
    labels, weights = batch["labels"], batch["weights"]
    torch.manual_seed(0)
    vocab = len(tokenizer)
    logits = torch.randn(*labels.shape, vocab)

    def loss_of(logits, labels):
        return (weights * sequence_nll(logits, labels)).sum()

    loss = loss_of(logits, labels)
    # Scrambling the logits that predict masked (prompt and padding) tokens changes nothing.
    predicts_masked = torch.cat([labels[:, 1:], labels[:, :1]], dim=1) == IGNORE_INDEX
    scrambled = logits.clone()
    scrambled[predicts_masked] = torch.randn(int(predicts_masked.sum()), vocab)
    assert torch.equal(loss_of(scrambled, labels), loss)
    # Changing one response token's label changes it.
    changed = labels.clone()
    row, position = 1, int((labels[1] != IGNORE_INDEX).nonzero()[0])
    changed[row, position] = (changed[row, position] + 1) % vocab
    assert not torch.isclose(loss_of(logits, changed), loss)


# ---- the weighted loss ---------------------------------------------------------------


def test_compute_loss_matches_a_hand_computation(model, tokenizer, tmp_path):
    batch = batch_of(EXAMPLES[:3], tokenizer)
    assert len(set(batch["attention_mask"].sum(dim=1).tolist())) == 3
    trainer = trainer_for(
        model, tmp_path, per_device_train_batch_size=4, gradient_accumulation_steps=2
    )
    with torch.no_grad():
        model.train()  # training divides by the configured 4 x 2 examples per step
        expected = hand_loss(model.eval(), batch, examples_per_step=8)
        assert trainer.compute_loss(model.train(), batch).item() == pytest.approx(
            expected.item(), rel=1e-5
        )
        model.eval()  # evaluation divides by the batch's own 3 examples
        expected = hand_loss(model, batch, examples_per_step=3)
        assert trainer.compute_loss(model, batch).item() == pytest.approx(expected.item(), rel=1e-5)
    # Weights of 1 give the mean over examples of each example's mean token NLL.
    batch["weights"] = torch.ones_like(batch["weights"])
    with torch.no_grad():
        per_example = [
            model(
                **{k: batch[k][i : i + 1] for k in ("input_ids", "attention_mask", "labels")}
            ).loss.item()
            for i in range(3)
        ]
        assert trainer.compute_loss(model, batch).item() == pytest.approx(
            sum(per_example) / 3, rel=1e-5
        )


def example_gradient(trainer, model, batch: dict, row: int) -> torch.Tensor:
    """The gradient of the training loss that comes from one row of the batch."""
    only_row = dict(batch, weights=batch["weights"] * (torch.arange(len(batch["weights"])) == row))
    model.zero_grad()
    trainer.compute_loss(model, only_row).backward()
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def test_an_examples_push_is_its_weight_whatever_shares_its_batch(model, tokenizer, tmp_path):
    """Two examples push in the ratio of their weights, in any company (issue: a batch of
    wrong answers must not push as hard as a batch of corrections)."""
    trainer = trainer_for(model, tmp_path, per_device_train_batch_size=4)
    model.train()
    correction = WeightedExample(MULTI_TURN, "5", rwr_weight(1.0))
    wrong = WeightedExample(MULTI_TURN, "6", rwr_weight(0.0))
    companies = {
        "alone": [],
        "with wrong answers": [WeightedExample(user("1+1?"), "3", rwr_weight(0.0))] * 3,
        "with corrections": [WeightedExample(user("1+1?"), "2", rwr_weight(1.0))] * 3,
    }
    pushes = {}
    for company, others in companies.items():
        batch = batch_of([correction, wrong, *others], tokenizer)
        pushes[company] = (
            example_gradient(trainer, model, batch, 0),
            example_gradient(trainer, model, batch, 1),
        )
    reference_correction, reference_wrong = pushes["alone"]
    for correction_push, wrong_push in pushes.values():
        torch.testing.assert_close(correction_push, reference_correction, rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(wrong_push, reference_wrong, rtol=1e-4, atol=1e-7)
    # the same example with the two weights: the pushes are in the ratio of the weights
    batch = batch_of([correction, WeightedExample(MULTI_TURN, "5", rwr_weight(0.0))], tokenizer)
    high, low = (example_gradient(trainer, model, batch, row) for row in (0, 1))
    scale = float(high.abs().max())
    torch.testing.assert_close(high, low * math.exp(1 / 0.4), rtol=1e-4, atol=1e-5 * scale)
    # a batch of wrong answers pushes 12.2 times less than the same batch of corrections
    losses = []
    for weight in (rwr_weight(0.0), rwr_weight(1.0)):
        batch = batch_of([WeightedExample(user("1+1?"), "2", weight)] * 4, tokenizer)
        with torch.no_grad():
            losses.append(trainer.compute_loss(model, batch).item())
    assert losses[1] / losses[0] == pytest.approx(math.exp(1 / 0.4), rel=1e-4)


def updated_weights(
    tiny_model_dir: Path, tokenizer, tmp_path: Path, batch_size: int, accumulation: int
):
    """The loss and the update of one SGD step (lr 1, no clipping) over all four examples."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    before = torch.cat([p.detach().flatten() for p in model.parameters()])
    trainer = trainer_for(
        model,
        tmp_path / f"{batch_size}x{accumulation}",
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        max_steps=1,
        optim="sgd",
        learning_rate=1.0,
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        save_strategy="no",
    )
    trainer.train_dataset = RWRDataset(EXAMPLES, tokenizer, 256)
    trainer.data_collator = RWRCollator(tokenizer.pad_token_id)
    loss = trainer.train().training_loss
    return loss, torch.cat([p.detach().flatten() for p in model.parameters()]) - before


def test_gradient_accumulation_matches_one_large_batch(tiny_model_dir, tokenizer, model, tmp_path):
    expected_loss = hand_loss(model, batch_of(EXAMPLES, tokenizer), examples_per_step=4).item()
    reference_loss, reference = updated_weights(tiny_model_dir, tokenizer, tmp_path, 4, 1)
    assert reference_loss == pytest.approx(expected_loss, rel=1e-5)
    for batch_size, accumulation in [(2, 2), (1, 4)]:
        loss, update = updated_weights(
            tiny_model_dir, tokenizer, tmp_path, batch_size, accumulation
        )
        assert loss == pytest.approx(expected_loss, rel=1e-5)
        # Equal up to float32 summation order (the step's size is the gradient itself).
        scale = float(reference.abs().max())
        torch.testing.assert_close(update, reference, rtol=1e-4, atol=1e-4 * scale)


# ---- training end to end -------------------------------------------------------------

HIGH = [WeightedExample(user(f"q{i}"), f"right {i}", rwr_weight(1.0)) for i in range(3)]
LOW = [WeightedExample(user(f"q{i}"), f"wrong {i}", rwr_weight(0.0)) for i in range(3)]
FAST_NO_BATCH = dict(learning_rate=2e-2, lora_rank=8, lora_dropout=0.0, logging_steps=5)
FAST = dict(per_device_batch_size=2, **FAST_NO_BATCH)


def mean_logprob(model, tokenizer, examples) -> float:
    """Mean over examples of log pi(target | prompt)."""
    with torch.no_grad():
        totals = []
        for example in examples:
            batch = batch_of([example], tokenizer)
            logits = model(input_ids=batch["input_ids"]).logits
            nll = sequence_nll(logits, batch["labels"])[0]
            totals.append(-nll.item() * int((batch["labels"][0] != IGNORE_INDEX).sum()))
    return sum(totals) / len(totals)


def test_train_rwr_lora_favours_high_weight_targets_and_saves_a_peft_adapter(
    tiny_model_dir, tokenizer, model, tmp_path
):
    before = mean_logprob(model, tokenizer, HIGH), mean_logprob(model, tokenizer, LOW)
    config = TrainingConfig(num_epochs=5, **FAST)
    path = train_rwr(model, HIGH + LOW, config, tmp_path / "adapter", tokenizer=tokenizer)
    model.eval()
    after = mean_logprob(model, tokenizer, HIGH), mean_logprob(model, tokenizer, LOW)
    high_gain, low_gain = after[0] - before[0], after[1] - before[1]
    assert high_gain > 10.0
    assert high_gain > low_gain + 5.0

    assert (path / "adapter_config.json").exists() and (path / "adapter_model.safetensors").exists()
    assert not (path / "checkpoints").exists()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    loaded = PeftModel.from_pretrained(base, path).eval()
    input_ids = batch_of(HIGH, tokenizer)["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(input_ids=input_ids).logits, model(input_ids=input_ids).logits
        )


def test_train_rwr_resumes_an_interrupted_run(tiny_model_dir, tokenizer, tmp_path, monkeypatch):
    config = TrainingConfig(max_steps=6, save_steps=2, keep_checkpoints=True, **FAST)
    uninterrupted = train_rwr(tiny_model_dir, HIGH + LOW, config, tmp_path / "whole")

    interrupt = [True]
    steps: list[int] = []
    original = RWRTrainer.training_step

    def interrupted_at_step_4(self, *args, **kwargs):
        if interrupt[0] and self.state.global_step == 3:
            raise KeyboardInterrupt
        steps.append(self.state.global_step)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(RWRTrainer, "training_step", interrupted_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        train_rwr(tiny_model_dir, HIGH + LOW, config, tmp_path / "resumed")
    assert (tmp_path / "resumed" / "checkpoints" / "checkpoint-2").exists()
    interrupt[0] = False
    steps.clear()
    resumed = train_rwr(tiny_model_dir, HIGH + LOW, config, tmp_path / "resumed")
    assert steps == [2, 3, 4, 5]  # steps 3 to 6 from checkpoint-2, not started over
    a = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), uninterrupted
    )
    b = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), resumed)
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        torch.testing.assert_close(p, q, msg=name)

    # A finished run returns at once; another configuration in the same folder is refused.
    steps.clear()
    assert train_rwr(tiny_model_dir, HIGH + LOW, config, tmp_path / "resumed") == resumed
    assert steps == []
    with pytest.raises(ValueError, match="another output_dir"):
        train_rwr(tiny_model_dir, HIGH, config, tmp_path / "resumed")


@pytest.mark.parametrize("group_by_length", [True, False])
def test_batches_group_examples_of_similar_length(tiny_model_dir, tmp_path, group_by_length):
    short = [WeightedExample(user(f"q{i}"), "ok", 1.0) for i in range(32)]
    long = [WeightedExample(user(f"q{i} " + "word " * 60), "ok", 1.0) for i in range(32)]
    widths: list[list[int]] = []  # per batch: the unpadded length of each row
    original = RWRCollator.__call__

    def recording(self, features):
        widths.append(sorted(len(feature["input_ids"]) for feature in features))
        return original(self, features)

    config = TrainingConfig(
        num_epochs=1, per_device_batch_size=4, group_by_length=group_by_length, **FAST_NO_BATCH
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(RWRCollator, "__call__", recording)
        train_rwr(tiny_model_dir, short + long, config, tmp_path / "adapter")
    mixed = sum(batch[-1] - batch[0] > 50 for batch in widths)
    assert len(widths) == 16
    # LengthGroupedSampler sorts random megabatches of 4 batches (16 examples) by length,
    # so at most one batch per megabatch straddles the two lengths; a random draw of 4
    # from 32 short and 32 long examples is mixed with probability 0.89.
    if group_by_length:
        assert mixed <= 4
    else:
        assert mixed > 8
