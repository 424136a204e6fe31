"""A tiny `RISEAgent.learn` under a multi-process launcher, for the launch test.

python -m accelerate.commands.launch --num_processes 2 tests/rise_learn_launched.py MODEL OUT

Each process writes its agent's history to OUT/history-RANK.json.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from agents.llm import make_llm
from agents.llm.base import SamplingParams
from agents.rise import RISEAgent, RISEConfig, TrainingConfig


def main(model: str, output: str) -> None:
    config = RISEConfig(
        boost=False,
        iterations=1,
        max_turns=2,
        train_problems=3,
        eval_problems=3,
        num_samples=2,
        max_new_tokens=4,
        output_dir=Path(output) / "run",
    )
    training = TrainingConfig(max_steps=1, per_device_batch_size=2, max_seq_length=512)
    llm = make_llm(model)
    agent = RISEAgent(llm, model, config, training, params=SamplingParams(max_new_tokens=4))
    agent.learn("RISE-Arithmetic-v0", {"difficulty": 1, "size": 50})
    rank = os.environ.get("RANK", "0")
    (Path(output) / f"history-{rank}.json").write_text(json.dumps(agent.history))


if __name__ == "__main__":
    main(*sys.argv[1:])
