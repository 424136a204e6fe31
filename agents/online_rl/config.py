"""`OnlineRLConfig`: how online multi-turn GRPO plays, scores and trains, and its GRPOConfig."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CREDITS = ("final", "discounted")
"""How an episode's per-turn rewards become its return (see `agents.online_rl`)."""

SCALE_REWARDS = ("group", "batch", "none")
"""TRL's ways of scaling advantages: by the group's, the batch's or no standard deviation."""

RESERVED_ENV_KWARGS = ("split", "max_turns", "stop_on_correct", "history_window")
"""Environment arguments the configuration decides (an episode must keep its whole history)."""

_DERIVED_GRPO_ARGUMENTS = (
    "output_dir",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "num_generations",
    "max_completion_length",
    "temperature",
    "learning_rate",
    "beta",
    "scale_rewards",
    "max_steps",
    "logging_steps",
    "save_strategy",
    "save_steps",
    "seed",
    "bf16",
    "use_cpu",
)
"""The GRPOConfig fields set from an `OnlineRLConfig` (not settable via grpo_arguments)."""


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class OnlineRLConfig:
    """How `MultiTurnGRPO` plays episodes, scores them and updates its LoRA policy."""

    max_turns: int = field(default=3, metadata=_help("Turns per training episode."))
    stop_on_correct: bool = field(
        default=False,
        metadata=_help(
            "End training episodes at the first correct answer. Off (the default), "
            "episodes run all max_turns turns, so keeping a right answer is trained too."
        ),
    )
    credit: str = field(
        default="final",
        metadata=_help(f"How turn rewards become the episode's return: one of {list(CREDITS)}."),
    )
    discount: float = field(
        default=1.0, metadata=_help("Per-turn discount of credit='discounted', in (0, 1].")
    )
    improvement_bonus: float = field(
        default=0.0,
        metadata=_help(
            "Added to the return when the last answer is right and the first wrong; "
            "subtracted when the first is right and the last wrong."
        ),
    )
    num_generations: int = field(
        default=8, metadata=_help("Episodes per problem (a GRPO group); at least 2.")
    )
    problems_per_step: int = field(
        default=4, metadata=_help("Distinct problems per optimizer step (per device).")
    )
    train_problems: int | None = field(
        default=None,
        metadata=_help("Use the first this many training problems (None: all of them)."),
    )
    max_steps: int = field(
        default=100, metadata=_help("Optimizer steps; a larger value continues a finished run.")
    )
    temperature: float = field(
        default=1.0, metadata=_help("Sampling temperature of the training episodes (> 0).")
    )
    max_new_tokens: int = field(default=256, metadata=_help("Tokens generated per response."))
    learning_rate: float = field(default=5e-5, metadata=_help("Peak (AdamW) learning rate."))
    beta: float = field(
        default=0.0, metadata=_help("KL penalty towards the base model (0: none, TRL's default).")
    )
    scale_rewards: str = field(
        default="group",
        metadata=_help(f"Advantage scaling, one of {list(SCALE_REWARDS)} (TRL's scale_rewards)."),
    )
    lora_rank: int = field(default=16, metadata=_help("LoRA rank r."))
    lora_alpha: int = field(default=32, metadata=_help("LoRA scaling alpha (scale alpha/r)."))
    lora_dropout: float = field(
        default=0.0,
        metadata=_help("Dropout on the LoRA input (0: training sees the sampling policy)."),
    )
    lora_target_modules: str | tuple[str, ...] = field(
        default="all-linear",
        metadata=_help("Modules given LoRA layers: 'all-linear' or names like ('q_proj',)."),
    )
    bf16: bool | None = field(
        default=None,
        metadata=_help("bfloat16 weights and autocast; None: where the GPU supports it."),
    )
    logging_steps: int = field(default=1, metadata=_help("Optimizer steps between log lines."))
    save_steps: int = field(
        default=10, metadata=_help("Optimizer steps between checkpoints (for resuming).")
    )
    seed: int = field(default=0, metadata=_help("Seed of LoRA initialisation and sampling."))
    output_dir: Path = field(
        default=Path("runs/online_rl"),
        metadata=_help("Where the settings, checkpoints, episodes and adapter go."),
    )
    grpo_arguments: dict[str, Any] = field(
        default_factory=dict,
        metadata=_help(
            "Any other trl.GRPOConfig field, passed through as is: loss_type='dr_grpo', "
            "epsilon=0.2, gradient_checkpointing=True, ..."
        ),
    )

    def __post_init__(self) -> None:
        self.output_dir = Path(self.output_dir)
        if isinstance(self.lora_target_modules, list):
            self.lora_target_modules = tuple(self.lora_target_modules)
        positive = {
            "max_turns": self.max_turns,
            "problems_per_step": self.problems_per_step,
            "max_steps": self.max_steps,
            "max_new_tokens": self.max_new_tokens,
            "lora_rank": self.lora_rank,
            "lora_alpha": self.lora_alpha,
            "logging_steps": self.logging_steps,
            "save_steps": self.save_steps,
        }
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.num_generations < 2:
            raise ValueError(
                f"num_generations must be >= 2 (a group needs a mean to compare with), "
                f"got {self.num_generations}; try 8"
            )
        if self.train_problems is not None and self.train_problems < 1:
            raise ValueError(f"train_problems must be None or >= 1, got {self.train_problems}")
        if self.credit not in CREDITS:
            raise ValueError(f"credit must be one of {list(CREDITS)}, got {self.credit!r}")
        if not 0 < self.discount <= 1:
            raise ValueError(f"discount must be in (0, 1], got {self.discount}; try 0.9")
        if self.scale_rewards not in SCALE_REWARDS:
            raise ValueError(
                f"scale_rewards must be one of {list(SCALE_REWARDS)}, got {self.scale_rewards!r}"
            )
        if self.temperature <= 0:
            raise ValueError(
                f"temperature must be > 0 so that a group's episodes differ, got "
                f"{self.temperature}; try 1.0"
            )
        if self.learning_rate <= 0 or self.beta < 0:
            raise ValueError("learning_rate must be > 0 and beta >= 0")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        derived = sorted(set(self.grpo_arguments) & set(_DERIVED_GRPO_ARGUMENTS))
        if derived:
            raise ValueError(
                f"grpo_arguments sets {derived}, which OnlineRLConfig sets from its own "
                "fields; set those fields instead (e.g. learning_rate, problems_per_step)"
            )


def grpo_arguments(config: OnlineRLConfig, bf16: bool) -> dict[str, Any]:
    """The GRPOConfig fields an `OnlineRLConfig` decides (`_DERIVED_GRPO_ARGUMENTS`)."""
    from agents.rise.train import cpu_only

    return dict(
        output_dir=str(config.output_dir / "checkpoints"),
        per_device_train_batch_size=config.problems_per_step * config.num_generations,
        gradient_accumulation_steps=1,
        num_generations=config.num_generations,
        max_completion_length=config.max_new_tokens,
        temperature=config.temperature,
        learning_rate=config.learning_rate,
        beta=config.beta,
        scale_rewards=config.scale_rewards,
        max_steps=config.max_steps,
        logging_steps=config.logging_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        seed=config.seed,
        bf16=bf16,
        use_cpu=cpu_only(),
        report_to="none",
    )


def use_bf16(setting: bool | None) -> bool:
    """Whether to train in bfloat16: ``setting``, or None: where the GPU supports it."""
    import torch

    if setting is not None:
        return setting
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
