"""One RWR training step on fixed examples, for the data-parallel test (run by torchrun).

python -m torch.distributed.run --nproc_per_node 2 tests/rwr_one_step.py MODEL OUT BATCH
"""

from __future__ import annotations

import sys

from agents.rise.examples import WeightedExample
from agents.rise.rwr import rwr_weight
from agents.rise.train import TrainingConfig, train_rwr

EXAMPLES = [
    WeightedExample([{"role": "user", "content": f"What is {i} + {i}?"}], answer, weight)
    for i, (answer, weight) in enumerate(
        [
            ("2 + 2 = 4", rwr_weight(1.0)),
            ("5", rwr_weight(0.0)),
            ("It is 6.", rwr_weight(1.0)),
            ("I do not know, maybe 1.", rwr_weight(0.0)),
        ]
    )
]
"""Four examples of different lengths and weights: one optimizer step of 4."""


def main(model: str, output: str, per_device_batch_size: int) -> None:
    config = TrainingConfig(
        per_device_batch_size=per_device_batch_size,
        num_epochs=1,
        learning_rate=0.5,
        lora_rank=4,
        lora_dropout=0.0,
        warmup_ratio=0.0,
        lr_scheduler="constant",
        max_grad_norm=0.0,
        group_by_length=False,
        training_arguments={"optim": "sgd"},  # the raw gradient, no Adam normalisation
    )
    train_rwr(model, EXAMPLES, config, output)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
