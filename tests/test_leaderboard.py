"""The leaderboard: reports consistent with the episode records, resume, folders, a tiny model."""

from __future__ import annotations

import csv
import importlib.metadata
import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import pytest
from matplotlib.image import imread

import agents.leaderboard.config as config_module
import agents.leaderboard.metadata as metadata_module
from agents.answer_scoring import train_answer_scorer
from agents.leaderboard import LeaderboardConfig, run_leaderboard
from agents.leaderboard.metadata import RunMetadata, git_commit
from agents.llm.base import (
    LLM,
    Completion,
    Generation,
    MissingDependency,
    ModelNotFound,
    auto_dtype,
)
from agents.stopping import evaluate_selection, load_learned_rule, train_stopping_policy
from rise_gym import __version__
from rise_gym.metrics import summarize
from rise_gym.records import ResultsError, read_records

ENVS = ("RISE-Arithmetic-v0", "RISE-GSM8K-v0")
STOPPING_EPISODES = Path(__file__).parent / "fixtures" / "stopping_episodes.jsonl"


class ScriptedLLM(LLM):
    """Answers arithmetic by rule, right or wrong depending on the problem and the turn.

    Sequential turns: ``a + b`` is answered right from turn ``(a + b) % 3`` (0-based)
    on, so p1@tk grows with k and m1@t3 is below p1@t3. Samples: sample i is right when
    ``(a + b + i) % 2 == 0``. GSM8K questions get a wrong answer. Counts conversations.
    """

    def __init__(self) -> None:
        self.conversations = 0

    def generate(self, conversations, params, *, adapter=None):
        self.conversations += len(conversations)
        generations = []
        for conversation in conversations:
            numbers = re.match(r"What is (\d+) \+ (\d+)\?", conversation[0]["content"])
            total = int(numbers[1]) + int(numbers[2]) if numbers else -1
            turn = sum(message["role"] == "assistant" for message in conversation)
            if params.n == 1:
                right = [turn >= total % 3]
            else:
                right = [(total + i) % 2 == 0 for i in range(params.n)]
            generations.append(
                Generation(
                    [
                        Completion(f"\\boxed{{{total if ok else total + 1}}}", num_tokens=4)
                        for ok in right
                    ]
                )
            )
        return generations


@pytest.fixture
def scripted(monkeypatch):
    """Every leaderboard back end is one ScriptedLLM; counts how often one was built."""
    llm = ScriptedLLM()
    builds = []

    def make_llm(model=None, **options):
        builds.append(model)
        return llm

    monkeypatch.setattr(config_module, "make_llm", make_llm)
    return llm, builds


@pytest.fixture(scope="module")
def stopping_policy(tmp_path_factory) -> Path:
    """A PPO stopping policy trained in a second on the fixture episodes (3 turns), saved."""
    policy = train_stopping_policy(
        STOPPING_EPISODES,
        total_timesteps=256,
        algorithm_kwargs={"n_steps": 128, "learning_rate": 3e-3},
    )
    return policy.save(tmp_path_factory.mktemp("stopping") / "policy")


@pytest.fixture(scope="module")
def answer_scorer(tmp_path_factory) -> Path:
    """An answer scorer fitted on the fixture episodes (3 turns), saved."""
    scorer = train_answer_scorer(STOPPING_EPISODES)
    return scorer.save(tmp_path_factory.mktemp("scorer") / "scorer")


def make_config(tmp_path, **overrides) -> LeaderboardConfig:
    settings = dict(
        envs=ENVS,
        agents=("sequential", "parallel"),
        num_problems=6,
        max_turns=3,
        max_new_tokens=8,
        output_dir=tmp_path,
    )
    return LeaderboardConfig(**{**settings, **overrides})


def read_reports(folder: Path) -> tuple[list[dict], list[dict], list[str], list[str]]:
    """A run folder's JSON records, CSV rows, Markdown lines and the Markdown table's lines."""
    report = json.loads((folder / "leaderboard.json").read_text())
    rows = list(csv.DictReader((folder / "leaderboard.csv").open()))
    markdown = (folder / "leaderboard.md").read_text().splitlines()
    return report, rows, markdown, [line for line in markdown if line.startswith("|")]


def test_reports_hold_every_entry_consistent_with_the_records(tmp_path, scripted):
    config = make_config(tmp_path)
    leaderboard = run_leaderboard(config, progress=False)
    folder = config.run_folder()

    report, rows, _, table = read_reports(folder)
    cells = [(kind, env) for kind in config.agents for env in ENVS]
    assert [(e["agent"], e["env_id"]) for e in report] == cells
    assert len(table) == 2 + len(cells)
    assert table[0].split(" | ")[3:9] == ["p1@t1", "p1@t2", "p1@t3", "m1@t3", "m3@t1", "p3@t1"]
    # the CSV is the JSON's table: the same columns, figures and units (fractions)
    as_text = [
        {key: "" if value is None else str(value) for key, value in record.items()}
        for record in report
    ]
    assert rows == [{k: v for k, v in record.items() if k != "settings"} for record in as_text]
    assert list(rows[0])[:4] == ["model", "agent", "env_id", "n"]

    for entry, line in zip(report, table[2:]):
        records = read_records(folder / "episodes" / f"{entry['agent']}--{entry['env_id']}.jsonl")
        assert len(records) == config.num_problems == entry["n"]
        turns = 1 if entry["agent"] == "parallel" else config.max_turns
        for name, estimate in summarize(records, max_turns=turns).items():
            assert entry[name] == pytest.approx(estimate.value)
            assert entry[f"{name}_low"] == pytest.approx(estimate.low)
            assert entry[f"{name}_high"] == pytest.approx(estimate.high)
            if name in leaderboard.columns:
                assert str(estimate) in line
        calls = sum(t.llm_calls for r in records for t in r.turns) / len(records)
        assert entry["llm_calls"] == pytest.approx(calls)
        assert entry["wall_time"] == pytest.approx(sum(r.wall_time for r in records))

    arithmetic = report[0]
    oracle = [arithmetic[f"p1@t{k}"] for k in (1, 2, 3)]
    assert oracle == sorted(oracle) and oracle[0] < oracle[2] == 1.0
    assert arithmetic["m1@t3"] < 1.0
    parallel = report[2]
    assert parallel["m3@t1"] < parallel["p3@t1"] == 1.0
    assert parallel["p1@t3"] is None and rows[2]["p1@t3"] == ""  # a figure it does not have
    assert report[0]["settings"]["num_problems"] == 6 and report[0]["settings"]["max_turns"] == 3

    image = imread(folder / "accuracy.png")
    height, width = image.shape[:2]
    assert width > 1.8 * height  # one panel per environment, side by side


def test_every_report_gives_the_run_metadata(tmp_path, scripted):
    config = make_config(tmp_path, agents=("sequential",), envs=ENVS[:1])
    started = datetime.now(timezone.utc).replace(microsecond=0)
    run_leaderboard(config, progress=False)
    report, rows, markdown, _ = read_reports(config.run_folder())
    expected = {
        "model": "SmolLM2-135M-Instruct",
        "served_model": None,
        "adapter": None,
        "backend": "transformers",
        "dtype": auto_dtype(),  # what "auto" loads on this machine
        "rise_gym_version": __version__,
        "torch_version": importlib.metadata.version("torch"),
        "transformers_version": importlib.metadata.version("transformers"),
        "peft_version": importlib.metadata.version("peft"),
    }
    assert {key: report[0][key] for key in expected} == expected
    commit = report[0]["git_commit"]  # the tests run from a checkout: one of its commits
    root = Path(__file__).parents[1]
    kind = subprocess.run(["git", "-C", str(root), "cat-file", "-t", commit], capture_output=True)
    assert re.fullmatch("[0-9a-f]{40}", commit) and kind.stdout == b"commit\n"
    assert rows[0]["model"] == "SmolLM2-135M-Instruct" and rows[0]["adapter"] == ""
    assert "vllm_version" in rows[0]
    date = datetime.fromisoformat(report[0]["date"])
    assert started <= date <= datetime.now(timezone.utc) and rows[0]["date"] == report[0]["date"]
    line = markdown[0]
    assert line.startswith("model SmolLM2-135M-Instruct, adapter none, back end transformers")
    assert f"rise-gym {__version__}" in line and f"torch {expected['torch_version']}" in line
    assert report[0]["date"] in line and f"commit {commit}" in line


def test_with_openai_the_metadata_names_the_model_the_server_serves(tmp_path):
    asked = make_config(
        tmp_path, backend="openai", base_url="http://localhost:8000/v1", model="llama"
    )
    metadata = RunMetadata.collect(asked, replace(asked, model="llama-3.2-1b-q8_0.gguf"))
    assert (metadata.model, metadata.served_model) == ("llama", "llama-3.2-1b-q8_0.gguf")
    assert metadata.to_markdown().startswith("model llama (served: llama-3.2-1b-q8_0.gguf), ")
    assert metadata.columns()["served_model"] == "llama-3.2-1b-q8_0.gguf"


def test_without_a_git_checkout_the_commit_is_none(tmp_path, monkeypatch):
    monkeypatch.setattr(metadata_module, "_CHECKOUT", tmp_path)  # an installed package
    assert git_commit() is None
    (tmp_path / ".git").mkdir()  # a broken checkout
    assert git_commit() is None
    monkeypatch.setenv("PATH", str(tmp_path))  # no git at all
    assert git_commit() is None


def test_the_json_report_loads_as_a_table_with_pandas(tmp_path, scripted):
    pandas = pytest.importorskip("pandas")
    config = make_config(tmp_path)
    run_leaderboard(config, progress=False)
    frame = pandas.read_json(config.run_folder() / "leaderboard.json")
    rows = list(csv.DictReader((config.run_folder() / "leaderboard.csv").open()))
    assert list(frame["agent"]) == [row["agent"] for row in rows]
    assert list(frame["p1@t1"]) == pytest.approx([float(row["p1@t1"]) for row in rows])


def test_second_run_with_the_same_settings_generates_nothing(tmp_path, scripted):
    llm, builds = scripted
    config = make_config(tmp_path)
    run_leaderboard(config, progress=False)
    first = read_reports(config.run_folder())[0]
    assert builds and llm.conversations > 0

    builds.clear()
    llm.conversations = 0
    run_leaderboard(config, progress=False)
    assert builds == [] and llm.conversations == 0  # no model was even loaded
    again = read_reports(config.run_folder())[0]
    assert [{**row, "date": None} for row in again] == [{**row, "date": None} for row in first]


def test_interrupted_run_resumes_with_the_missing_episodes_only(tmp_path, scripted):
    llm, _ = scripted
    config = make_config(tmp_path, agents=("sequential",), envs=("RISE-Arithmetic-v0",))
    run_leaderboard(config, progress=False)
    episodes = config.run_folder() / "episodes" / "sequential--RISE-Arithmetic-v0.jsonl"
    lines = episodes.read_text().splitlines(keepends=True)
    episodes.write_text("".join(lines[:4]))  # killed before episodes 5 and 6 finished

    llm.conversations = 0
    run_leaderboard(config, progress=False)
    assert llm.conversations == 2 * config.max_turns  # episodes 5 and 6, every turn
    assert [r.index for r in read_records(episodes)] == [0, 1, 2, 3, 4, 5]


def check_stopping_reports(folder, policy_dir, max_turns):
    """Every report holds the learned rule's figures on each turn-by-turn agent's episodes."""
    policy = load_learned_rule(policy_dir)
    report, rows, _, table = read_reports(folder)
    header = table[0].split(" | ")
    accuracy, turns = f"stop@t{max_turns}", header.index("turns (stop)")
    assert header.index(accuracy) == turns - 1 == header.index(f"m1@t{max_turns}") + 1
    names = list(rows[0])
    assert names.index(accuracy) == names.index(f"m1@t{max_turns}_high") + 1
    assert report[0]["settings"]["stopping_policy"] == str(policy_dir)
    for entry, row, line in zip(report, rows, table[2:], strict=True):
        cells = line.split(" | ")
        if entry["agent"] == "parallel":  # its turns are samples: nothing to stop
            assert entry[accuracy] is None and entry["stop_turns"] is None
            assert row[accuracy] == row[f"{accuracy}_low"] == row["stop_turns"] == ""
            assert cells[turns - 1] == cells[turns] == "–"
            continue
        episodes = folder / "episodes" / f"{entry['agent']}--{entry['env_id']}.jsonl"
        expected = evaluate_selection(episodes, policy, max_turns=max_turns)
        estimate = expected.accuracy
        figures = [entry[name] for name in (accuracy, f"{accuracy}_low", f"{accuracy}_high")]
        assert figures == [estimate.value, estimate.low, estimate.high]
        assert entry["stop_turns"] == expected.average_turns
        csv_figures = [row[name] for name in (accuracy, f"{accuracy}_low", f"{accuracy}_high")]
        assert [float(x) for x in csv_figures] == pytest.approx(figures)
        assert float(row["stop_turns"]) == pytest.approx(expected.average_turns)
        assert cells[turns - 1 : turns + 1] == [str(estimate), f"{expected.average_turns:.2f}"]


@pytest.mark.parametrize("rule", ["stopping_policy", "answer_scorer"])
def test_a_learned_rule_added_later_reuses_the_episodes(tmp_path, scripted, rule, request):
    stopping_policy = request.getfixturevalue(rule)
    llm, builds = scripted
    config = make_config(tmp_path, envs=ENVS[:1])
    run_leaderboard(config, progress=False)
    folder = config.run_folder()
    assert "stop" not in (folder / "leaderboard.md").read_text()  # no policy: as before
    assert "stop" not in (folder / "leaderboard.csv").read_text()
    assert "stop_turns" not in json.loads((folder / "leaderboard.json").read_text())[0]

    builds.clear()
    llm.conversations = 0
    with_policy = make_config(tmp_path, envs=ENVS[:1], stopping_policy=str(stopping_policy))
    leaderboard = run_leaderboard(with_policy, progress=False)
    assert with_policy.run_folder() == folder
    assert builds == [] and llm.conversations == 0  # the finished episodes were reused
    assert leaderboard.columns == [
        *("p1@t1", "p1@t2", "p1@t3", "m1@t3"),
        *("stop@t3", "stop_turns", "m3@t1", "p3@t1"),
    ]
    check_stopping_reports(folder, stopping_policy, max_turns=3)
    sequential, parallel = leaderboard.entries
    episodes = read_records(folder / "episodes" / "sequential--RISE-Arithmetic-v0.jsonl")
    assert sequential.stopping == evaluate_selection(
        episodes, load_learned_rule(stopping_policy), max_turns=3
    )
    assert parallel.stopping is None


def test_columns_are_listed_once_at_one_turn(tmp_path, scripted):
    config = make_config(tmp_path, agents=("sequential",), envs=ENVS[:1], max_turns=1)
    leaderboard = run_leaderboard(config, progress=False)
    assert leaderboard.columns == ["p1@t1", "m1@t1"]
    folder = config.run_folder()
    header = read_reports(folder)[3][0]
    assert (
        header == "| agent | env | n | p1@t1 | m1@t1 | calls/problem | tokens/problem | time (s) |"
    )
    csv_header = (folder / "leaderboard.csv").read_text().splitlines()[0].split(",")
    bounds = [f"{name}{suffix}" for name in ("p1@t1", "m1@t1") for suffix in ("", "_low", "_high")]
    assert csv_header[4:11] == [*bounds, "llm_calls"]


def test_run_folder_depends_on_settings_that_change_results_only(tmp_path):
    base = make_config(tmp_path)
    same = [make_config(tmp_path, agents=("parallel",), envs=ENVS[:1], batch_size=2)]
    different = [
        make_config(tmp_path, **change)
        for change in (
            {"num_problems": 7},
            {"seed": 1},
            {"max_turns": 4},
            {"difficulty": 2},
            {"max_new_tokens": 9},
            {"model": "/models/other"},
            {"backend": "vllm"},
            {"dtype": "float32" if auto_dtype() == "bfloat16" else "bfloat16"},
            {"env_args": {"retry_prompt": "Again."}},
        )
    ]
    assert all(config.run_folder() == base.run_folder() for config in same)
    # "auto" is recorded as what it loads: the same run as naming that dtype
    assert make_config(tmp_path, dtype=auto_dtype()).run_folder() == base.run_folder()
    folders = {config.run_folder() for config in different}
    assert len(folders) == len(different) and base.run_folder() not in folders
    assert base.run_folder().name.startswith("SmolLM2-135M-Instruct-")


def fake_adapter(folder: Path, config: str = '{"peft_type": "LORA"}') -> Path:
    folder.mkdir()
    (folder / "adapter_config.json").write_text(config)
    (folder / "adapter_model.safetensors").write_bytes(b"weights")
    return folder


def test_an_adapter_saved_again_in_place_gets_a_new_run_folder(tmp_path):
    adapter = fake_adapter(tmp_path / "adapter")
    config = make_config(tmp_path, agents=("sequential", "rise"), adapter=str(adapter))
    before = config.run_folder()
    (adapter / "adapter_model.safetensors").write_bytes(b"retrained")
    os.utime(adapter / "adapter_model.safetensors", ns=(2**62, 2**62))
    assert config.run_folder() != before
    with pytest.raises(ModelNotFound, match="not a PEFT adapter"):
        make_config(tmp_path, agents=("rise",), adapter=str(tmp_path / "missing"))


def test_a_local_model_saved_again_in_place_gets_a_new_run_folder(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    config = make_config(tmp_path, model=str(model))
    before = config.run_folder()
    os.utime(model / "config.json", ns=(2**62, 2**62))
    assert config.run_folder() != before and before.name.startswith("model-")


def test_a_folder_with_a_manifest_of_other_settings_is_refused(tmp_path, scripted):
    config = make_config(tmp_path, agents=("sequential",), envs=("RISE-Arithmetic-v0",))
    manifest = config.run_folder() / "manifest.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"model": "something else"}))
    with pytest.raises(ResultsError, match='other settings .*model: "something else" there'):
        run_leaderboard(config, progress=False)


def test_a_manifest_cut_short_or_a_folder_that_cannot_be_created_is_refused(tmp_path, scripted):
    llm, builds = scripted
    config = make_config(tmp_path, agents=("sequential",), envs=ENVS[:1])
    manifest = config.run_folder() / "manifest.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text('{"model": "Smol')
    with pytest.raises(ResultsError, match="not a leaderboard manifest.*move"):
        run_leaderboard(config, progress=False)
    (tmp_path / "file").write_text("x")
    blocked = make_config(tmp_path / "file", agents=("sequential",), envs=ENVS[:1])
    with pytest.raises(ResultsError, match="cannot use the run folder.*output_dir"):
        run_leaderboard(blocked, progress=False)
    assert builds == [] and llm.conversations == 0


def test_an_episodes_file_cut_short_is_repaired_and_one_of_other_settings_refused(
    tmp_path, scripted
):
    llm, builds = scripted
    config = make_config(tmp_path, agents=("sequential",), envs=ENVS[:1])
    run_leaderboard(config, progress=False)
    episodes = config.run_folder() / "episodes" / "sequential--RISE-Arithmetic-v0.jsonl"
    complete = episodes.read_bytes()
    assert all(r.settings["max_new_tokens"] == 8 for r in read_records(episodes))
    episodes.write_bytes(complete[:-40])  # killed while writing the last episode
    llm.conversations = 0
    run_leaderboard(config, progress=False)
    assert llm.conversations == config.max_turns  # the last episode only
    assert len(read_records(episodes)) == 6 and episodes.read_bytes().endswith(b"\n")

    lines = episodes.read_text().splitlines(keepends=True)  # one copied from another run
    foreign = json.loads(lines[0])
    foreign["settings"]["max_new_tokens"] = 64
    episodes.write_text("".join(lines[:-1]) + json.dumps(foreign) + "\n")
    builds.clear()
    with pytest.raises(ResultsError, match="max_new_tokens: 64 there, 8 now"):
        run_leaderboard(config, progress=False)
    assert builds == []


def test_a_missing_plotting_library_fails_before_any_work(tmp_path, scripted, monkeypatch):
    llm, builds = scripted
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingDependency, match=r"matplotlib.*pip install 'rise-gym\[llm\]'"):
        run_leaderboard(make_config(tmp_path), progress=False)
    assert builds == [] and llm.conversations == 0 and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"agents": ("sequential", "oracle")}, "unknown agent 'oracle'"),
        ({"envs": ("RISE-Nope-v0",)}, "unknown environment id"),
        ({"agents": ("rise",)}, "adapter"),
        ({"adapter": "runs/adapter"}, "adapter"),
        ({"num_problems": 0}, "num_problems must be >= 1"),
        ({"backend": "openai"}, "base_url"),
        ({"dtype": "bf16"}, "unknown dtype 'bf16'; choose one of .*'bfloat16'"),
        ({"backend": "openai", "base_url": "http://x", "dtype": "float16"}, "server decides"),
        ({"stopping_policy": "no/such/policy"}, "no such directory.*benchmarks/stopping.py"),
        ({"seed": -1}, "seed must be >= 0, got -1"),
        ({"base_url": "http://x"}, "for the 'openai' back end only"),
        ({"temperature": float("nan")}, "both finite"),
        ({"parallel_temperature": float("inf")}, "both finite"),
    ],
)
def test_bad_settings_are_rejected_with_the_fix(tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        make_config(tmp_path, **change)


def test_tiny_model_end_to_end_on_two_envs_and_two_agents(
    tmp_path, tiny_model_dir, torch_one_thread, stopping_policy
):
    config = make_config(
        tmp_path,
        model=str(tiny_model_dir),
        num_problems=2,
        max_turns=2,
        max_new_tokens=8,
        stopping_policy=stopping_policy,
    )
    leaderboard = run_leaderboard(config, progress=False)
    folder = config.run_folder()
    assert {path.name for path in folder.iterdir()} == {
        "episodes",
        "manifest.json",
        "leaderboard.md",
        "leaderboard.csv",
        "leaderboard.json",
        "accuracy.png",
    }
    assert len(list((folder / "episodes").glob("*.jsonl"))) == 4
    assert [(e.agent, e.env_id) for e in leaderboard.entries] == [
        (kind, env) for kind in ("sequential", "parallel") for env in ENVS
    ]
    for entry in leaderboard.entries:
        assert entry.metrics["p1@t1"].n == 2
        assert entry.generated_tokens > 0 and entry.wall_time > 0
        assert entry.llm_calls == 2  # two turns, or k = 2 samples
    check_stopping_reports(folder, stopping_policy, max_turns=2)
