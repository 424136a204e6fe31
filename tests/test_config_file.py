"""Config files: keys are the options of a command, values converted and checked as theirs."""

from __future__ import annotations

import argparse
import doctest
import json
from pathlib import Path

import pytest

import agents.config_file as config_file
from agents.cli import build_parser
from agents.config_file import (
    ConfigFileError,
    option_values,
    read_config_file,
    resolved_config,
    write_config_file,
)


def command_parser(command: str) -> argparse.ArgumentParser:
    """The parser of one ``rise-gym`` command."""
    return build_parser().parse_args([command]).parser


def test_keys_take_dashes_or_underscores_and_values_are_converted_like_options():
    parser = command_parser("eval")
    values = option_values(
        parser,
        {
            "num-problems": "8",
            "max_turns": 3,
            "temperature": 0,
            "history_window": None,
            "output": "runs/episodes.jsonl",
            "env_args": {"difficulty": 2, "retry_prompt": "Again."},
            "no_progress": True,
            "agent": "parallel",
        },
        source="run.yaml",
    )
    assert values == {
        "num_problems": 8,
        "max_turns": 3,
        "temperature": 0.0,
        "history_window": None,
        "output": Path("runs/episodes.jsonl"),
        "env_args": [("difficulty", 2), ("retry_prompt", "Again.")],
        "no_progress": True,
        "agent": "parallel",
    }
    assert option_values(command_parser("leaderboard"), {"agents": "parallel"}, source="f") == {
        "agents": ["parallel"]
    }


@pytest.mark.parametrize(
    ("command", "values", "message"),
    [
        ("eval", {"num_problem": 2}, "run.yaml: unknown key 'num_problem' (did you mean "),
        ("eval", {"agents": ["sequential"]}, "unknown key 'agents' (did you mean 'agent'?)"),
        ("eval", {"iterations": 2}, "unknown key 'iterations'; the keys of rise-gym eval are"),
        ("eval", {"config": "other.yaml"}, "unknown key 'config'"),
        ("eval", {"num_problems": "many"}, "run.yaml: num_problems: invalid int value: 'many'"),
        ("eval", {"num_problems": 2.5}, "num_problems: invalid int value: 2.5"),
        ("eval", {"num_problems": None}, "num_problems cannot be null; give a value"),
        ("eval", {"num_problems": True}, "num_problems takes one value, not True"),
        ("eval", {"model": ["a", "b"]}, "model takes one value, not ['a', 'b']"),
        ("eval", {"seed": -1}, "seed: a seed must be >= 0, got -1"),
        ("eval", {"agent": "oracle"}, "agent: invalid choice 'oracle'; choose from sequential"),
        ("eval", {"no_progress": "yes"}, "no_progress must be true or false, got 'yes'"),
        ("eval", {"env_args": ["difficulty=2"]}, "env_args must be a mapping of names"),
        ("leaderboard", {"agents": [["x"]]}, "agents takes one value"),
        ("train", {"full-finetune": 1}, "full_finetune must be true or false, got 1"),
        ("train", {"learning_rate": "fast"}, "learning_rate: invalid float value: 'fast'"),
    ],
)
def test_an_unknown_key_or_a_bad_value_is_named_with_the_fix(command, values, message):
    with pytest.raises(ConfigFileError) as raised:
        option_values(command_parser(command), values, source="run.yaml")
    assert message in str(raised.value)


def test_an_unknown_key_lists_every_valid_key():
    parser = command_parser("leaderboard")
    with pytest.raises(ConfigFileError) as raised:
        option_values(parser, {"colour": "red"}, source="run.yaml")
    listed = str(raised.value).split("are: ")[1].split(", ")
    assert listed == sorted(config_file.config_options(parser))
    assert {"num_problems", "agents", "envs", "env_args", "no_progress"} <= set(listed)


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
@pytest.mark.parametrize("command", ["eval", "leaderboard", "train"])
def test_the_resolved_config_round_trips_through_a_file(tmp_path, command, suffix):
    parser = build_parser()
    argv = {
        "eval": [
            "eval",
            "--num-problems",
            "3",
            "--env-args",
            "difficulty=2",
            "--output",
            "e.jsonl",
        ],
        "leaderboard": ["leaderboard", "--agents", "parallel", "--history-window", "none"],
        "train": ["train", "--no-drop-degrading", "--training-arg", "optim=adamw_torch"],
    }[command]
    args = parser.parse_args(argv)
    resolved = resolved_config(args.parser, args)
    path = tmp_path / f"config{suffix}"
    if suffix == ".yaml":
        write_config_file(path, resolved, command=args.parser.prog)
        assert path.read_text().startswith(f"# The resolved options of a `rise-gym {command}`")
    else:
        path.write_text(json.dumps(resolved))
    assert read_config_file(path) == resolved

    fresh = build_parser()
    command_args = fresh.parse_args([command])
    command_args.parser.set_defaults(
        **option_values(command_args.parser, read_config_file(path), source=str(path))
    )
    again = fresh.parse_args([command])
    assert {k: v for k, v in vars(again).items() if k not in ("command", "parser")} == {
        k: v for k, v in vars(args).items() if k not in ("command", "parser")
    }


def test_read_config_file_accepts_yaml_and_json_mappings_only(tmp_path):
    (tmp_path / "empty.yaml").write_text("# nothing set\n")
    assert read_config_file(tmp_path / "empty.yaml") == {}
    (tmp_path / "run.yml").write_text("num_problems: 4\nagents: [sequential, parallel]\n")
    assert read_config_file(tmp_path / "run.yml") == {
        "num_problems": 4,
        "agents": ["sequential", "parallel"],
    }
    for name, text, message in [
        ("list.json", "[1, 2]", "holds a list, not a mapping of option names"),
        ("broken.json", "{num_problems: 4", "is not valid JSON"),
        ("broken.yaml", "num_problems: [4", "is not valid YAML"),
        ("run.toml", "num_problems = 4", "is neither YAML nor JSON; name it with one of"),
        ("missing.yaml", None, "cannot read the config file"),
    ]:
        if text is not None:
            (tmp_path / name).write_text(text)
        with pytest.raises(ConfigFileError, match=message):
            read_config_file(tmp_path / name)


def test_doctests():
    assert doctest.testmod(config_file).failed == 0
