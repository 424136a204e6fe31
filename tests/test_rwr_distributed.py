"""RWR under data parallelism: two CPU processes (gloo) train exactly like one process on
the same global batch, and TrainingArguments fields pass through TrainingConfig."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
safetensors = pytest.importorskip("safetensors.torch")

from agents.rise.train import TrainingConfig  # noqa: E402

SCRIPT = Path(__file__).with_name("rwr_one_step.py")
ROOT = SCRIPT.parent.parent


def train(model: Path, output: Path, processes: int, batch: int) -> dict[str, torch.Tensor]:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [*launcher, str(SCRIPT), str(model), str(output), str(batch)]
    subprocess.run(command, check=True, env=env, cwd=ROOT, capture_output=True, timeout=300)
    return safetensors.load_file(output / "adapter_model.safetensors")


def test_two_processes_train_like_one_on_the_same_global_batch(tiny_model_dir, tmp_path):
    single = train(tiny_model_dir, tmp_path / "one", processes=1, batch=4)
    parallel = train(tiny_model_dir, tmp_path / "two", processes=2, batch=2)
    initial = TrainingConfig()  # LoRA B starts at zero: the step moved every B matrix
    assert initial.use_lora and all(
        single[name].abs().max() > 0 for name in single if "lora_B" in name
    )
    for name, weights in single.items():
        torch.testing.assert_close(parallel[name], weights, rtol=1e-4, atol=1e-6, msg=name)


def test_training_arguments_pass_through_and_typos_are_named():
    config = TrainingConfig.from_settings({"learning_rate": 1e-3, "optim": "sgd"})
    assert config.learning_rate == 1e-3 and config.training_arguments == {"optim": "sgd"}
    with pytest.raises(ValueError, match="did you mean 'optim'"):
        TrainingConfig.from_settings({"optimm": "sgd"})
    with pytest.raises(ValueError, match="set the TrainingConfig field instead"):
        TrainingConfig(training_arguments={"learning_rate": 1.0})
