"""benchmarks/oracle_nll.py end to end on the tiny model: shapes, finiteness, learning."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytest.importorskip("peft")

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "oracle_nll.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("oracle_nll", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the script runs
    spec.loader.exec_module(module)
    return module


@pytest.mark.usefixtures("torch_one_thread")
def test_oracle_nll_tiny(tiny_model_dir: Path, tmp_path: Path) -> None:
    oracle_nll = load_script()
    settings = oracle_nll.Settings(
        model=str(tiny_model_dir),
        problems=2,
        eval_problems=2,
        samples=2,
        steps=4,
        save_steps=2,
        max_new_tokens=8,
        dtype="float32",
        learning_rate=1e-2,
        batch_size=2,
        output=tmp_path,
    )
    results = oracle_nll.measure(settings)

    assert results["steps"] == [0, 2, 4]
    for method in oracle_nll.METHODS:
        for column in (*oracle_nll.COLUMNS, "turn1_accuracy"):
            values = results[method][column]
            assert len(values) == 3
            assert all(math.isfinite(value) for value in values)
        # both start from the base model
        assert results[method]["single"][0] == results["sft"]["single"][0]
        assert all(value > 0 for value in results[method]["single"])
    # training on y* (of the same format) lowers its NLL on held-out problems
    assert results["sft"]["single"][-1] < results["sft"]["single"][0]
    assert results["rise"]["marginal"][-1] < results["rise"]["marginal"][0]
    assert "RISE marginal" in oracle_nll.format_table(results)
