"""The shared RISE reproduction end to end on a tiny model, and its two command-line wrappers."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import pytest
from markers import has_cuda

from agents.llm.factory import DTYPES
from agents.rise.reproduce import ReproductionSettings, run_reproduction

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_settings(model_dir: Path, output: Path, iterations: int = 1) -> ReproductionSettings:
    return ReproductionSettings(
        env_id="RISE-Arithmetic-v0",
        env_kwargs={"difficulty": 1, "size": 20},
        model=str(model_dir),
        eval_problems=3,
        train_problems=4,
        boost_problems=8,
        iterations=iterations,
        max_turns=3,
        num_samples=2,
        max_new_tokens=8,
        learning_rate=3e-2,
        epochs=1.0,
        per_device_batch_size=4,
        max_seq_length=256,
        output=output,
    )


def test_reproduction_writes_every_row_and_gap_and_resumes(
    tiny_model_dir, tmp_path, torch_one_thread
):
    run = tmp_path / "run"
    settings = tiny_settings(tiny_model_dir, run, iterations=2)
    first = run_reproduction(settings, progress=False)

    results = json.loads((run / "results-self.json").read_text())
    sequential = {"p1@t1", "p1@t2", "p1@t3", "m1@t1", "m1@t3"}
    parallel = {"m3@t1", "p3@t1"}
    expected = {
        "base: sequential": sequential,
        "base: parallel k=3": parallel,
        "base: self-refine (2 turns)": {"p1@t1", "p1@t2", "m1@t1", "m1@t2"},
        "boost: sequential": sequential,
        "RISE iteration 1: sequential": sequential,
        "RISE: sequential": sequential,
        "RISE: parallel k=3": parallel,
        "boost: parallel k=3": parallel,  # a reference row, last
    }
    assert list(results["rows"]) == list(expected)
    for name, columns in expected.items():
        row = results["rows"][name]
        assert columns <= set(row) if "parallel" not in name else columns == set(row), name
        for estimate in row.values():
            assert 0 <= estimate["low"] <= estimate["value"] <= estimate["high"] <= 1
            assert estimate["n"] == 3
    assert set(results["gaps"]) == {"base", "boost", "RISE"}
    for model, gaps in results["gaps"].items():  # from the sequential row's m1@t1
        sequential = {k: v["value"] for k, v in results["rows"][f"{model}: sequential"].items()}
        parallel = results["rows"][f"{model}: parallel k=3"]["m3@t1"]["value"]
        assert gaps == {
            "m1@t3 - m1@t1": pytest.approx(sequential["m1@t3"] - sequential["m1@t1"]),
            "m1@t3 - m3@t1": pytest.approx(sequential["m1@t3"] - parallel),
        }
    assert results["settings"]["output"] == str(run)
    table = (run / "results-self.md").read_text()
    assert "| RISE: parallel k=3 |" in table and "m1@t3 - m3@t1 =" in table
    assert "RISE: self-distillation (best of 2 samples" in table
    assert "| agent | p1@t1 | p1@t2 | p1@t3 | m1@t1 | m1@t2 | m1@t3 | m3@t1 | p3@t1 |" in table
    assert (run / "rise-self" / "iteration-2" / "model" / "adapter_config.json").exists()
    assert (run / "eval" / "rise-self-iteration-2-parallel.jsonl").exists()
    spent = [
        json.loads((run / "rise-self" / f"iteration-{i}" / "generated_tokens.json").read_text())
        for i in (1, 2)
    ]
    assert results["generated_tokens"] == sum(sum(t.values()) for t in spent) > 0
    assert f"RISE generated {results['generated_tokens']} tokens" in table
    for row, counts in results["transitions"].items():  # 3 problems x 2 turn pairs
        assert "parallel" not in row
        assert counts["transitions"] == 3 * (1 if "self-refine" in row else 2)
        assert counts["right_to_wrong"] + counts["wrong_to_right"] <= counts["transitions"]

    # a second run finds every step done: no episode is added, the figures are the same
    episodes = {path: path.read_bytes() for path in run.rglob("*.jsonl")}
    assert len(episodes) >= 8  # 4 evaluations, boost and iteration evals, rollouts, states
    second = run_reproduction(settings, progress=False)
    assert second.rows == first.rows
    assert second.generated_tokens == first.generated_tokens
    assert {path: path.read_bytes() for path in run.rglob("*.jsonl")} == episodes


def test_an_expert_run_in_the_same_folder_shares_the_base_and_boost_steps(
    tiny_model_dir, tmp_path, torch_one_thread
):
    run = tmp_path / "run"
    self_distilled = run_reproduction(tiny_settings(tiny_model_dir, run), progress=False)
    shared = {path: path.stat().st_mtime_ns for path in (run / "eval").glob("base-*.jsonl")}
    shared[run / "boost" / "eval.jsonl"] = (run / "boost" / "eval.jsonl").stat().st_mtime_ns
    settings = replace(
        tiny_settings(tiny_model_dir, run),
        improvement="expert",
        ood_retry_prompts=True,
        feedback_rows=True,
        self_refine=False,
    )
    distilled = run_reproduction(settings, progress=False)
    assert {path: path.stat().st_mtime_ns for path in shared} == shared  # reused, not redone
    for row in ("base: sequential", "boost: sequential"):
        assert distilled.rows[row] == self_distilled.rows[row]
    assert not any("self-refine" in row for row in distilled.rows)  # self_refine=False
    table = (run / "results-expert-arithmetic.md").read_text()
    assert "distillation from an oracle-quality expert (arithmetic)" in table
    for prompt in ("terse", "reconsider", "checker"):  # retry prompts unseen in training
        row = distilled.rows[f"RISE: sequential, retry prompt '{prompt}'"]
        assert {"p1@t1", "m1@t2", "m1@t3"} <= set(row)
        episode = (run / "eval" / f"rise-expert-arithmetic-retry-{prompt}.jsonl").read_text()
        assert episode.count('"turn": 3') == 3
    for row, episodes in (
        ("boost: sequential, answer feedback", "boost-feedback-answer"),
        ("RISE: sequential, answer feedback", "rise-expert-arithmetic-feedback-answer"),
    ):
        assert {"p1@t1", "m1@t3"} <= set(distilled.rows[row])
        assert '"env.feedback": "answer"' in (run / "eval" / f"{episodes}.jsonl").read_text()
    states = (run / "rise-expert-arithmetic" / "iteration-1" / "states.jsonl").read_text()
    assert "The answer is \\\\boxed{" in states  # the expert's worked answers, JSON-escaped


def test_run_names_keep_configurations_apart():
    assert ReproductionSettings().run_name == "self"
    assert ReproductionSettings(improvement="expert", expert="reference").run_name == (
        "expert-reference"
    )
    classic = ReproductionSettings(data_shape="first_turn", data_filter="success")
    assert classic.run_name == "self-first_turn-success"
    assert "single-turn SFT on successful first answers ('Classic')" in classic.improvement_label
    assert ReproductionSettings(boost=False).run_name == "self-no-boost"


def test_bad_settings_fail_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="max_turns must be >= 2"):
        ReproductionSettings(max_turns=1)
    with pytest.raises(ValueError, match="backend must be one of"):
        ReproductionSettings(backend="openai")
    with pytest.raises(ValueError, match="per_device_batch_size"):  # from TrainingConfig
        ReproductionSettings(per_device_batch_size=0)
    with pytest.raises(ValueError, match="data_filter must be one of"):  # from RISEConfig
        ReproductionSettings(data_filter="good")
    with pytest.raises(ValueError, match="dtype must be one of"):
        ReproductionSettings(dtype="bf16")


def test_training_precision_follows_the_generation_dtype():
    bf16 = {dtype: ReproductionSettings(dtype=dtype).training_config().bf16 for dtype in DTYPES}
    assert bf16 == {"auto": None, "float32": False, "bfloat16": True, "float16": None}


def test_cpu_preset_is_the_default_and_every_option_overrides_it():
    script = load_script("reproduce")
    args = script.build_parser().parse_args([])
    assert (args.preset, args.difficulty, args.dtype, args.eval_problems) == (
        "cpu",
        4,
        "bfloat16",
        300,
    )
    assert (args.train_problems, args.boost_problems, args.iterations) == (64, 200, 2)
    assert (args.improvement, args.num_samples, args.sample_temperature) == ("self", 16, 0.7)
    assert (args.data_shape, args.data_filter, args.drop_unimproved) == ("all_turns", "all", True)
    assert not args.collect_stop_on_correct and args.self_refine and not args.ood_retry_prompts
    assert not args.feedback_rows
    assert (args.max_new_tokens, args.learning_rate, args.output) == (
        48,
        5e-4,
        Path("runs/reproduce_cpu"),
    )
    cpu = script.PRESETS["cpu"]
    assert (cpu.per_device_batch_size, cpu.max_seq_length, cpu.env_kwargs) == (
        16,
        512,
        {"difficulty": 4},
    )
    every_option = {action.dest for action in script.build_parser()._actions}
    assert set(script.OPTIONS) <= every_option


def test_gpu_preset_has_the_documented_defaults():
    script = load_script("reproduce")
    args = script.build_parser("gsm8k-gpu").parse_args(["--preset", "gsm8k-gpu"])
    assert args.model == "Qwen/Qwen2.5-0.5B-Instruct" and args.backend == "vllm"
    assert (args.eval_problems, args.train_problems, args.iterations) == (500, 1000, 2)
    assert (args.num_samples, args.max_new_tokens, args.history_window) == (8, 512, 2)
    assert args.boost and not args.full_finetune and args.difficulty is None
    assert script.PRESETS["gsm8k-gpu"].env_id == "RISE-GSM8K-v0"
    reduced = script.build_parser("gsm8k-gpu").parse_args(
        ["--eval-problems", "200", "--train-problems", "256", "--iterations", "1"]
    )
    assert (reduced.eval_problems, reduced.train_problems, reduced.iterations) == (200, 256, 1)


@pytest.mark.skipif(has_cuda(), reason="checks the message where no GPU is")
def test_gpu_script_without_a_gpu_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        load_script("reproduce").main(["--preset", "gsm8k-gpu", "--output", "unused"])
    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert "needs a CUDA GPU" in error and "backend='transformers'" in error
    assert "Traceback" not in error


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed")
def test_gpu_script_without_vllm_names_the_extra(capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # as on a GPU machine
    with pytest.raises(SystemExit) as exit_:
        load_script("reproduce").main(["--preset", "gsm8k-gpu", "--output", "unused"])
    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert "pip install 'rise-gym[vllm]'" in error and "Traceback" not in error
