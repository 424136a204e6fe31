"""The multi-GPU training configs of examples/accelerate, as accelerate and the Trainer read
them, and TrainingConfig's activation checkpointing under either transformers name.

The DDP config also trains for real on CPU: two processes started by ``accelerate launch``
with it give the adapter one process gives on the same global batch (the launch of
tests/test_rwr_distributed.py, through accelerate's launcher and this config).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("torch")
pytest.importorskip("accelerate")

from accelerate.commands.config.config_args import load_config_from_file  # noqa: E402
from accelerate.commands.launch import (  # noqa: E402
    _validate_launch_command,
    launch_command_parser,
)

from agents.rise.train import TrainingConfig, _training_arguments  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "examples" / "accelerate"
LAUNCH_MODES = {
    "ddp.yaml": "multi_gpu",
    "fsdp.yaml": "use_fsdp",
    "deepspeed_zero2.yaml": "use_deepspeed",
    "deepspeed_zero3.yaml": "use_deepspeed",
}
"""Each accelerate config and the `accelerate launch` mode it selects."""


def launch_arguments(config_file: Path, *options: str) -> argparse.Namespace:
    """The arguments `accelerate launch --config_file FILE OPTIONS script.py` runs with."""
    parser = launch_command_parser()
    args = parser.parse_args(["--config_file", str(config_file), *options, "script.py"])
    return _validate_launch_command(args)[0]


def test_every_config_in_the_folder_is_checked() -> None:
    assert {path.name for path in CONFIGS.glob("*.yaml")} == set(LAUNCH_MODES)


@pytest.mark.parametrize("name", sorted(LAUNCH_MODES))
def test_accelerate_launch_reads_the_config(name: str) -> None:
    config = load_config_from_file(str(CONFIGS / name))  # unknown top-level keys raise
    known = set(vars(launch_command_parser().parse_args(["script.py"])))
    nested = set(config.fsdp_config) | set(config.deepspeed_config)
    assert nested <= known, f"keys accelerate launch does not know: {nested - known}"
    args = launch_arguments(CONFIGS / name)
    assert getattr(args, LAUNCH_MODES[name])
    assert args.mixed_precision == "no"  # TrainingConfig.bf16 decides the precision
    if config.deepspeed_config:
        assert (ROOT / config.deepspeed_config["deepspeed_config_file"]).is_file()


DEEPSPEED_STAGES = {"ds_zero2.json": 2, "ds_zero3.json": 3}


@pytest.mark.parametrize("name, stage", DEEPSPEED_STAGES.items())
def test_the_deepspeed_configs_shard_at_their_stage(name: str, stage: int) -> None:
    from accelerate.utils.deepspeed import HfDeepSpeedConfig

    config = HfDeepSpeedConfig(str(CONFIGS / name))
    assert config.get_value("zero_optimization.stage") == stage
    if stage == 3:  # else the saved adapter would hold this process's shard only
        assert config.get_value("zero_optimization.stage3_gather_16bit_weights_on_model_save")


@pytest.mark.parametrize("name", sorted(DEEPSPEED_STAGES))
def test_the_trainer_fills_every_auto_value_of_the_deepspeed_configs(
    name: str, tmp_path: Path
) -> None:
    pytest.importorskip("deepspeed")  # transformers reads DeepSpeed configs only beside it
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    config = HfTrainerDeepSpeedConfig(str(CONFIGS / name))
    training = TrainingConfig(per_device_batch_size=4, gradient_accumulation_steps=2)
    args = _training_arguments(training, tmp_path, bf16=True)
    config.trainer_config_process(args)
    model = SimpleNamespace(config=SimpleNamespace(hidden_size=576))
    config.trainer_config_finalize(args, model, num_training_steps=10)  # raises on mismatches
    assert '"auto"' not in json.dumps(config.config)
    assert config.get_value("gradient_accumulation_steps") == 2
    assert config.get_value("bf16.enabled") is True


def test_gradient_checkpointing_reaches_the_training_arguments(tmp_path: Path) -> None:
    """Under ``activation_checkpointing`` (5.23+) or ``gradient_checkpointing`` (older)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # no deprecated alias on 5.23+
        args = _training_arguments(
            TrainingConfig(gradient_checkpointing=True), tmp_path, bf16=False
        )
    # 5.23+ keeps the old names as mirrors of the new ones.
    assert args.gradient_checkpointing is True
    assert args.gradient_checkpointing_kwargs == {"use_reentrant": False}


@pytest.mark.parametrize("name", ["gradient_checkpointing", "activation_checkpointing_kwargs"])
def test_checkpointing_passed_as_a_training_argument_is_refused(name: str) -> None:
    """Either transformers spelling would be overridden by TrainingConfig's own field."""
    with pytest.raises(ValueError, match="TrainingConfig.gradient_checkpointing"):
        TrainingConfig(training_arguments={name: True})
    routed = TrainingConfig.from_settings({"gradient_checkpointing": True})
    assert routed.gradient_checkpointing and not routed.training_arguments


def test_the_ddp_config_trains_two_cpu_processes_like_one(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from test_rwr_distributed import SCRIPT, train

    single = train(tiny_model_dir, tmp_path / "one", processes=1, batch=4)
    launch = [sys.executable, "-m", "accelerate.commands.launch"]
    options = ["--config_file", str(CONFIGS / "ddp.yaml"), "--num_processes", "2"]
    output = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [*launch, *options, str(SCRIPT), str(tiny_model_dir), str(output), "2"]
    subprocess.run(command, check=True, env=env, cwd=ROOT, capture_output=True, timeout=300)

    import safetensors.torch
    import torch

    parallel = safetensors.torch.load_file(output / "adapter_model.safetensors")
    assert parallel.keys() == single.keys()
    for name, weights in single.items():
        torch.testing.assert_close(parallel[name], weights, rtol=1e-4, atol=1e-6, msg=name)


def test_rise_learn_under_a_two_process_launch_collects_and_evaluates_once(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Every process trains; only the main one rolls out and evaluates, the other reads."""
    launch = [sys.executable, "-m", "accelerate.commands.launch"]
    options = ["--config_file", str(CONFIGS / "ddp.yaml"), "--num_processes", "2"]
    script = Path(__file__).with_name("rise_learn_launched.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [*launch, *options, str(script), str(tiny_model_dir), str(tmp_path)]
    subprocess.run(command, check=True, env=env, cwd=ROOT, capture_output=True, timeout=300)

    folder = tmp_path / "run" / "iteration-1"
    for name in ("rollouts.jsonl", "eval.jsonl"):
        episodes = [json.loads(line) for line in (folder / name).read_text().splitlines()]
        assert len(episodes) == 3 and len({e["problem_id"] for e in episodes}) == 3, name
    assert len((folder / "states.jsonl").read_text().splitlines()) == 3 * 2
    histories = [json.loads((tmp_path / f"history-{rank}.json").read_text()) for rank in (0, 1)]
    assert histories[0] == histories[1] and "m1@t2" in histories[0][0]
    assert (folder / "model" / "adapter_model.safetensors").exists()
