"""Every script in examples/ runs as written (as a subprocess), with tiny settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name: str, *argv: str, cwd: Path) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny models run fastest on one thread
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *argv],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_quickstart_plays_episodes_that_improve_on_the_second_turn(tmp_path):
    out = run_example("quickstart.py", cwd=tmp_path)
    lines = out.splitlines()
    assert len(lines) == 6
    assert all(line.endswith("reward 0.0") for line in lines[0::2])
    assert all(line.endswith("reward 1.0") for line in lines[1::2])


def test_custom_agent_scores_both_agents(tmp_path):
    out = run_example("custom_agent.py", "--problems", "4", "--turns", "2", cwd=tmp_path)
    assert out.splitlines()[0] == "calculator" and "p1@t1  100.0" in out
    assert "guesser" in out and "m1@t2" in out


def test_evaluate_model_prints_the_metrics(tmp_path, tiny_model_dir):
    out = run_example(
        "evaluate_model.py",
        "--model",
        str(tiny_model_dir),
        "--problems",
        "2",
        "--turns",
        "2",
        "--max-new-tokens",
        "8",
        cwd=tmp_path,
    )
    assert "sequential on RISE-Arithmetic-v0" in out and "p1@t2" in out and "m1@t2" in out


@pytest.mark.slow
def test_train_rise_trains_an_adapter(tmp_path, tiny_model_dir):
    out = run_example(
        "train_rise.py",
        "--model",
        str(tiny_model_dir),
        "--problems",
        "2",
        "--turns",
        "2",
        "--samples",
        "2",
        "--max-new-tokens",
        "8",
        "--max-steps",
        "1",
        "--expert",
        "arithmetic",
        "--output-dir",
        "runs",
        cwd=tmp_path,
    )
    assert "iteration-1" in out
    assert (tmp_path / "runs" / "iteration-1" / "model" / "adapter_config.json").is_file()
    assert "The answer is" in (tmp_path / "runs" / "iteration-1" / "states.jsonl").read_text()
