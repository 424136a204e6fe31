"""RISE: recursive introspection, trained with reward-weighted regression (RWR).

`RISEAgent` collects multi-turn rollouts, relabels them and trains with `train_rwr`
(LoRA through peft by default) on `WeightedExample`s weighted by `rwr_weight`.

Names are loaded on first use, so ``import agents.rise`` (or a light submodule such as
`agents.rise.relabel`) does not import torch or transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agents.rise.agent import RISEAgent
    from agents.rise.config import RISEConfig
    from agents.rise.examples import RWRCollator, RWRDataset, WeightedExample
    from agents.rise.rwr import RWRTrainer, rwr_weight
    from agents.rise.train import TrainingConfig, train_rwr

_MODULES = {
    "RISEAgent": "agents.rise.agent",
    "RISEConfig": "agents.rise.config",
    "RWRCollator": "agents.rise.examples",
    "RWRDataset": "agents.rise.examples",
    "WeightedExample": "agents.rise.examples",
    "RWRTrainer": "agents.rise.rwr",
    "rwr_weight": "agents.rise.rwr",
    "TrainingConfig": "agents.rise.train",
    "train_rwr": "agents.rise.train",
}

__all__ = [
    "RISEAgent",
    "RISEConfig",
    "RWRCollator",
    "RWRDataset",
    "RWRTrainer",
    "TrainingConfig",
    "WeightedExample",
    "rwr_weight",
    "train_rwr",
]


def __getattr__(name: str) -> Any:
    if name not in _MODULES:
        raise AttributeError(f"module 'agents.rise' has no attribute {name!r}")
    return getattr(importlib.import_module(_MODULES[name]), name)
