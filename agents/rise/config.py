"""The configuration of a RISE run: one dataclass, every field documented and validated."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from agents.rise.relabel import DATA_FILTERS

DATA_SHAPES = ("all_turns", "second_turn", "first_turn")
"""Which visited states are relabelled (see `RISEConfig.data_shape`)."""

RELABEL_CONTEXTS = ("state", "problem")
"""What the improver sees when it drafts improved actions (see `RISEConfig.relabel_context`)."""


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class RISEConfig:
    """How RISE collects data, relabels it and trains (see ../RISE.md)."""

    iterations: int = field(
        default=2,
        metadata=_help(
            "RISE iterations after the boost phase; each rolls out a new sample of problems."
        ),
    )
    max_turns: int = field(default=5, metadata=_help("Turns per on-policy rollout."))
    history_window: int | None = field(
        default=2, metadata=_help("Earlier attempts kept in each state (None keeps all).")
    )
    train_problems: int = field(
        default=256, metadata=_help("Training problems rolled out per iteration.")
    )
    eval_problems: int = field(
        default=100, metadata=_help("Held-out problems for the per-iteration evaluation.")
    )
    improvement: str = field(
        default="self",
        metadata=_help("'self': best of num_samples learner samples; 'expert': an expert LLM."),
    )
    num_samples: int = field(
        default=16, metadata=_help("Samples drawn at each state to find an improved action.")
    )
    rollout_temperature: float = field(
        default=0.0, metadata=_help("Temperature of the on-policy rollouts (0 = greedy).")
    )
    sample_temperature: float = field(
        default=0.7, metadata=_help("Temperature of the relabelling samples.")
    )
    relabel_context: str = field(
        default="state",
        metadata=_help(
            "What the improver samples from: 'state' (the paper's: the visited state, "
            "earlier attempts included) or 'problem' (the opening prompt alone, one draw "
            "per problem; the best sample becomes the improved action at every state of "
            "that problem). A small learner resamples the answer it was told is wrong; "
            "'problem' frees its samples from that anchor."
        ),
    )
    max_new_tokens: int = field(default=256, metadata=_help("Tokens generated per response."))
    tau: float = field(default=0.4, metadata=_help("RWR temperature: weight = exp(r / tau)."))
    data_filter: str = field(
        default="all", metadata=_help(f"Which actions to train on: one of {list(DATA_FILTERS)}.")
    )
    drop_degrading: bool = field(
        default=True,
        metadata=_help("Drop rollouts in which a later turn is worse than an earlier one."),
    )
    drop_unimproved: bool = field(
        default=True,
        metadata=_help(
            "Drop a relabelled action whose reward does not beat the on-policy action's "
            "(a best-of-N search that found nothing better is not an improvement)."
        ),
    )
    collect_stop_on_correct: bool = field(
        default=False,
        metadata=_help(
            "Stop collection rollouts at the first correct answer (an oracle). Off, states "
            "after correct answers are collected too, so the model learns to keep a right "
            "answer when told to try again, as m1@tk evaluation asks of it."
        ),
    )
    data_shape: str = field(
        default="all_turns",
        metadata=_help(
            "'all_turns': relabel every state of max_turns-turn rollouts; 'second_turn' "
            "(the reference code's): roll out two turns and relabel only the state after "
            "the first answer; 'first_turn': single-turn data only (with data_filter "
            "'success', the paper's 'Classic' SFT on successful single-turn answers)."
        ),
    )
    boost: bool = field(
        default=True,
        metadata=_help("Start with SFT on reference solutions of the training split."),
    )
    boost_problems: int = field(
        default=512, metadata=_help("Reference solutions used by the boost phase.")
    )
    boost_dir: Path | None = field(
        default=None,
        metadata=_help(
            "Folder of the boost phase's adapter and evaluation (none: output_dir/boost); "
            "runs that start from the same boost can share it."
        ),
    )
    ray_address: str | None = field(
        default=None,
        metadata=_help(
            "Roll out, relabel and evaluate on a Ray cluster ('auto', 'ray://HOST:10001' or "
            "'local'; see agents.ray_engine), training here: the learner must be a LazyLLM "
            "(the command line builds one) and the adapter folders readable at the same "
            "path on every node. Needs the ray extra. None: everything in this process."
        ),
    )
    seed: int = field(default=0, metadata=_help("Seed of rollouts, sampling and training."))
    output_dir: Path = field(
        default=Path("runs/rise"),
        metadata=_help("Where every iteration writes its data, adapter and metrics."),
    )

    def __post_init__(self) -> None:
        self.output_dir = Path(self.output_dir)
        if self.boost_dir is not None:
            self.boost_dir = Path(self.boost_dir)
        positive = {
            "iterations": self.iterations,
            "max_turns": self.max_turns,
            "train_problems": self.train_problems,
            "eval_problems": self.eval_problems,
            "num_samples": self.num_samples,
            "max_new_tokens": self.max_new_tokens,
            "boost_problems": self.boost_problems,
        }
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.history_window is not None and self.history_window < 0:
            raise ValueError(f"history_window must be None or >= 0, got {self.history_window}")
        if self.improvement not in ("self", "expert"):
            raise ValueError(
                f"improvement must be 'self' (best-of-N) or 'expert', got {self.improvement!r}"
            )
        if self.data_filter not in DATA_FILTERS:
            raise ValueError(
                f"data_filter must be one of {list(DATA_FILTERS)}, got {self.data_filter!r}"
            )
        if self.data_shape not in DATA_SHAPES:
            raise ValueError(
                f"data_shape must be one of {list(DATA_SHAPES)}, got {self.data_shape!r}"
            )
        if self.data_shape == "second_turn" and self.max_turns < 2:
            raise ValueError("data_shape='second_turn' needs max_turns >= 2")
        if self.relabel_context not in RELABEL_CONTEXTS:
            raise ValueError(
                f"relabel_context must be one of {list(RELABEL_CONTEXTS)}, "
                f"got {self.relabel_context!r}"
            )
        if self.tau <= 0:
            raise ValueError(f"tau must be > 0 (the paper uses 0.4), got {self.tau}")
        if self.sample_temperature <= 0 and self.num_samples > 1:
            raise ValueError(
                "sample_temperature must be > 0 to draw several distinct samples "
                f"(num_samples={self.num_samples}); try 1.0"
            )
        if self.ray_address is not None and not self.ray_address.strip():
            raise ValueError("ray_address is empty; pass 'auto', 'ray://HOST:10001' or 'local'")
        if self.rollout_temperature < 0:
            raise ValueError(f"rollout_temperature must be >= 0, got {self.rollout_temperature}")
