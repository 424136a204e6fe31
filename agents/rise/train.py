"""Training a model with RWR on weighted examples: LoRA through peft, or full fine-tuning.

`train_rwr` writes into its output folder::

    output_dir/
        adapter_config.json, adapter_model.safetensors   the LoRA adapter (PEFT format,
                                                         loadable by PeftModel and vLLM)
        (or config.json, model.safetensors, ...)         the full model, without LoRA
        tokenizer files, training_args.bin
        rwr_run.json                                     fingerprint and completion flag
        checkpoints/checkpoint-N/                        while training (kept on request)

A call on a folder holding an unfinished run of the same model, examples and
configuration resumes from its last checkpoint; on a finished one, it returns at once.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, get_peft_model
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    TrainingArguments,
    set_seed,
)
from transformers.trainer_utils import get_last_checkpoint

from agents.rise.examples import RWRCollator, RWRDataset, WeightedExample
from agents.rise.rwr import RWRTrainer

logger = logging.getLogger(__name__)

RUN_FILE = "rwr_run.json"
CHECKPOINTS = "checkpoints"


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class TrainingConfig:
    """How `train_rwr` trains: LoRA (the default) or full fine-tuning, and the optimiser."""

    use_lora: bool = field(
        default=True, metadata=_help("Train a LoRA adapter; False fine-tunes all weights.")
    )
    lora_rank: int = field(default=16, metadata=_help("LoRA rank r."))
    lora_alpha: int = field(default=32, metadata=_help("LoRA scaling alpha (scale alpha/r)."))
    lora_dropout: float = field(default=0.05, metadata=_help("Dropout on the LoRA input."))
    lora_target_modules: str | tuple[str, ...] = field(
        default="all-linear",
        metadata=_help(
            "Modules given LoRA layers: 'all-linear' or names like ('q_proj', 'v_proj')."
        ),
    )
    learning_rate: float = field(
        default=1e-4,
        metadata=_help("Peak learning rate; ~1e-4 for LoRA, ~1e-5 for full fine-tuning."),
    )
    num_epochs: float = field(default=2.0, metadata=_help("Passes over the examples."))
    max_steps: int = field(
        default=-1, metadata=_help("Optimizer steps to stop after; -1 lets num_epochs decide.")
    )
    per_device_batch_size: int = field(
        default=8, metadata=_help("Examples per micro-batch on each device.")
    )
    gradient_accumulation_steps: int = field(
        default=1,
        metadata=_help("Micro-batches per optimizer step (the loss is exact across them)."),
    )
    max_seq_length: int = field(
        default=2048,
        metadata=_help("Tokens per sequence; longer prompts lose tokens from the left."),
    )
    group_by_length: bool = field(
        default=True,
        metadata=_help(
            "Batch examples of similar length (transformers' LengthGroupedSampler), so "
            "less compute goes to padding; False draws batches uniformly at random."
        ),
    )
    warmup_ratio: float = field(
        default=0.03, metadata=_help("Fraction of the steps with a linear learning-rate warm-up.")
    )
    lr_scheduler: str = field(
        default="cosine", metadata=_help("transformers scheduler name: 'cosine', 'linear', ...")
    )
    weight_decay: float = field(default=0.0, metadata=_help("AdamW weight decay."))
    max_grad_norm: float = field(
        default=1.0, metadata=_help("Gradient clipping norm; 0 disables clipping.")
    )
    bf16: bool | None = field(
        default=None,
        metadata=_help(
            "bfloat16 mixed precision; None uses it where the GPU supports it. With LoRA "
            "the frozen base weights are also loaded in bfloat16. Without a GPU it "
            "trains on the CPU (about 1.7x faster than float32 where the CPU has "
            "AVX512-BF16 or AMX)."
        ),
    )
    gradient_checkpointing: bool = field(
        default=False,
        metadata=_help("Activation checkpointing: recompute activations in the backward pass."),
    )
    logging_steps: int = field(default=10, metadata=_help("Optimizer steps between log lines."))
    save_steps: int = field(
        default=100, metadata=_help("Optimizer steps between checkpoints (for resuming).")
    )
    keep_checkpoints: bool = field(
        default=False, metadata=_help("Keep output_dir/checkpoints after training finishes.")
    )
    report_to: str = field(
        default="none", metadata=_help("Where to log: 'none', 'tensorboard', 'wandb', ...")
    )
    seed: int = field(default=0, metadata=_help("Seed of LoRA initialisation and data order."))
    training_arguments: dict[str, Any] = field(
        default_factory=dict,
        metadata=_help(
            "Any other transformers.TrainingArguments field, passed through as is: "
            "deepspeed='ds.json', fsdp='full_shard', optim='adamw_torch_fused', "
            "ddp_find_unused_parameters=False, ..."
        ),
    )

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> TrainingConfig:
        """A config from flat settings: its own fields, and any TrainingArguments field.

        Raises:
            ValueError: A name is neither (it names the close matches).
        """
        own = {f.name for f in fields(cls)} - {"training_arguments"}
        passed = {k: v for k, v in settings.items() if k not in own | {"training_arguments"}}
        return cls(
            **{k: v for k, v in settings.items() if k in own},
            training_arguments={**settings.get("training_arguments", {}), **passed},
        )

    def __post_init__(self) -> None:
        positive = {
            "lora_rank": self.lora_rank,
            "lora_alpha": self.lora_alpha,
            "learning_rate": self.learning_rate,
            "num_epochs": self.num_epochs,
            "per_device_batch_size": self.per_device_batch_size,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
            "logging_steps": self.logging_steps,
            "save_steps": self.save_steps,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(f"max_steps must be -1 (use num_epochs) or > 0, got {self.max_steps}")
        if self.max_seq_length < 2:
            raise ValueError(f"max_seq_length must be >= 2, got {self.max_seq_length}")
        if self.weight_decay < 0 or self.max_grad_norm < 0:
            raise ValueError("weight_decay and max_grad_norm must be >= 0 (0 disables them)")
        if isinstance(self.lora_target_modules, list):
            self.lora_target_modules = tuple(self.lora_target_modules)
        _check_training_arguments(self)


def train_rwr(
    model: str | Path | PreTrainedModel,
    examples: Sequence[WeightedExample],
    config: TrainingConfig | None = None,
    output_dir: str | Path = "rwr-output",
    *,
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> Path:
    """Train ``model`` with RWR on ``examples`` and save the result in ``output_dir``.

    Args:
        model: A model folder or hub id, or a loaded causal LM. A loaded model is
            trained in place (with LoRA, adapter layers are injected into it), and its
            weights are not part of the run's fingerprint.
        examples: The weighted examples.
        config: The training configuration (default: LoRA with default settings).
        output_dir: Where the adapter (or full model) and checkpoints go.
        tokenizer: The tokenizer (with a chat template); default: loaded from
            ``model`` (its ``name_or_path`` for a loaded model).

    Returns:
        ``output_dir``, which holds a PEFT adapter (or, without LoRA, a full model).

    Raises:
        ValueError: If ``output_dir`` holds a run of another model, other examples or
            another configuration (delete it or pick another folder), or if no example
            fits in ``config.max_seq_length``.
    """
    config = config or TrainingConfig()
    output_dir = Path(output_dir)
    run_file = output_dir / RUN_FILE
    fingerprint = _fingerprint(model, examples, config)
    if run_file.exists():
        run = json.loads(run_file.read_text())
        if run["fingerprint"] != fingerprint:
            raise ValueError(
                f"{output_dir} holds a run of another model, other examples or another "
                "configuration; delete it or choose another output_dir"
            )
        if run["complete"]:
            logger.info("%s already holds the trained result; not training again", output_dir)
            return output_dir
    name = model.name_or_path if isinstance(model, PreTrainedModel) else str(model)
    tokenizer = tokenizer or AutoTokenizer.from_pretrained(name)
    bf16 = config.bf16 if config.bf16 is not None else _bf16_supported()
    set_seed(config.seed)
    trainer = RWRTrainer(
        model=_prepare_model(model, config, bf16),
        args=_training_arguments(config, output_dir / CHECKPOINTS, bf16),
        train_dataset=RWRDataset(examples, tokenizer, config.max_seq_length),
        data_collator=RWRCollator(_pad_token_id(tokenizer)),
        processing_class=tokenizer,
    )
    checkpoints = output_dir / CHECKPOINTS
    last = get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
    if last:
        logger.info("Resuming RWR training from %s", last)
    elif trainer.is_world_process_zero():
        output_dir.mkdir(parents=True, exist_ok=True)
        run_file.write_text(json.dumps({"fingerprint": fingerprint, "complete": False}))
    trainer.train(resume_from_checkpoint=last)
    trainer.save_model(str(output_dir))
    if trainer.is_world_process_zero():
        run_file.write_text(json.dumps({"fingerprint": fingerprint, "complete": True}))
        if not config.keep_checkpoints:
            shutil.rmtree(checkpoints, ignore_errors=True)
    return output_dir


def _prepare_model(
    model: str | Path | PreTrainedModel, config: TrainingConfig, bf16: bool
) -> torch.nn.Module:
    """Load the model if needed and add LoRA layers unless fine-tuning fully.

    Full fine-tuning keeps float32 master weights (bf16 then only autocasts); LoRA
    loads the frozen base in bfloat16 when bf16 is on.
    """
    if not isinstance(model, PreTrainedModel):
        dtype = torch.bfloat16 if bf16 and config.use_lora else torch.float32
        model = AutoModelForCausalLM.from_pretrained(str(model), dtype=dtype)
    if config.gradient_checkpointing:
        model.config.use_cache = False
    if not config.use_lora:
        return model
    return get_peft_model(model, lora_config(config))


def bf16_for_dtype(dtype: str) -> bool | None:
    """The `TrainingConfig.bf16` that trains like the generation weights' ``dtype``.

    On for ``"bfloat16"``, off for ``"float32"``, None (where the GPU supports it) for
    ``"auto"`` and ``"float16"``.
    """
    return {"bfloat16": True, "float32": False}.get(dtype)


def lora_config(config: TrainingConfig) -> LoraConfig:
    """The PEFT `LoraConfig` of ``config``'s rank, alpha, dropout and target modules."""
    targets = config.lora_target_modules
    return LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets if isinstance(targets, str) else list(targets),
        task_type="CAUSAL_LM",
    )


def _training_arguments(config: TrainingConfig, folder: Path, bf16: bool) -> TrainingArguments:
    return TrainingArguments(
        **_derived_arguments(config, folder, bf16), **config.training_arguments
    )


def _derived_arguments(config: TrainingConfig, folder: Path, bf16: bool) -> dict[str, Any]:
    """The TrainingArguments this module sets from a `TrainingConfig`."""
    return dict(
        output_dir=str(folder),
        per_device_train_batch_size=config.per_device_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        num_train_epochs=config.num_epochs,
        max_steps=config.max_steps,
        warmup_steps=config.warmup_ratio,
        lr_scheduler_type=config.lr_scheduler,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        bf16=bf16,
        use_cpu=cpu_only(),  # transformers needs it for bf16 and for several processes on CPU
        **_checkpointing_arguments(config.gradient_checkpointing),
        logging_steps=config.logging_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        report_to=config.report_to,
        seed=config.seed,
        train_sampling_strategy="group_by_length" if config.group_by_length else "random",
        remove_unused_columns=False,
        dataloader_pin_memory=torch.cuda.is_available(),
    )


def _checkpointing_arguments(enabled: bool) -> dict[str, Any]:
    """Activation checkpointing under the name this transformers gives it.

    transformers 5.23 renamed ``gradient_checkpointing(_kwargs)`` to
    ``activation_checkpointing(_kwargs)`` (the old names stay as deprecated aliases); the
    vLLM releases cap transformers below 5.23, so both kinds of TrainingArguments occur.
    """
    names = {f.name for f in fields(TrainingArguments)}
    prefix = "activation" if "activation_checkpointing" in names else "gradient"
    return {
        f"{prefix}_checkpointing": enabled,
        f"{prefix}_checkpointing_kwargs": {"use_reentrant": False},
    }


_CHECKPOINTING_NAMES = {
    f"{prefix}_checkpointing{suffix}"
    for prefix in ("gradient", "activation")
    for suffix in ("", "_kwargs")
}
"""Both transformers spellings of activation checkpointing: `TrainingConfig` sets them."""


def _check_training_arguments(config: TrainingConfig) -> None:
    """Refuse names that are no TrainingArguments field, or that a config field sets."""
    valid = {f.name for f in fields(TrainingArguments)}
    derived = set(_derived_arguments(config, Path("."), bf16=False))
    for name in config.training_arguments:
        if name in _CHECKPOINTING_NAMES:
            raise ValueError(
                f"TrainingArguments.{name} is set from TrainingConfig.gradient_checkpointing "
                "under the name this transformers uses; set that field instead "
                "(TrainingConfig(gradient_checkpointing=True); command line: "
                "--training-arg gradient_checkpointing=true)"
            )
        if name not in valid:
            close = difflib.get_close_matches(
                name, valid | {f.name for f in fields(TrainingConfig)}
            )
            raise ValueError(
                f"{name!r} is neither a TrainingConfig nor a transformers.TrainingArguments "
                f"field{'; did you mean ' + ' or '.join(map(repr, close)) + '?' if close else ''}"
            )
        if name in derived:
            raise ValueError(
                f"TrainingArguments.{name} is set from TrainingConfig; set the TrainingConfig "
                "field instead (e.g. learning_rate, num_epochs, per_device_batch_size, bf16)"
            )


def _fingerprint(
    model: str | Path | PreTrainedModel,
    examples: Sequence[WeightedExample],
    config: TrainingConfig,
) -> str:
    """A hash of what determines a run's result, to refuse resuming a different run."""
    if isinstance(model, PreTrainedModel):
        identity = f"{type(model).__name__}:{model.name_or_path}"
    else:
        identity = str(model)
    payload = {
        "model": identity,
        "config": asdict(config),
        "examples": [asdict(example) for example in examples],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _pad_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The pad id, or EOS where the tokenizer has none (pads are masked either way)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise ValueError("The tokenizer has neither a pad token nor an EOS token")
    return int(pad)


def _bf16_supported() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def cpu_only() -> bool:
    """Whether no accelerator is present (no CUDA GPU, no Apple MPS)."""
    return not (torch.cuda.is_available() or torch.backends.mps.is_available())
