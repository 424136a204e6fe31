"""CoNaLa: loading local files, the missing-data error, the execution reward, episodes."""

from __future__ import annotations

import doctest
import json
import sys
from pathlib import Path

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

import rise_gym  # noqa: F401  (registers the ids)
import rise_gym.envs.conala as conala_env
from rise_gym.data.conala import load_conala_problems
from rise_gym.envs.conala import ConalaEnv, extract_snippet, same_code
from rise_gym.errors import DataFileError, DatasetNotFound

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the sandbox needs Linux")
ROOT = Path(__file__).parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "conala_sample.jsonl"


def make(**kwargs) -> ConalaEnv:
    return gym.make("RISE-CoNaLa-v0", **{"data_files": FIXTURE, **kwargs}).unwrapped


def fenced(code: str) -> str:
    return f"Here it is:\n```python\n{code}\n```"


# ---- data -----------------------------------------------------------------------------


def test_fixture_rows_become_problems():
    problems = load_conala_problems("test", FIXTURE)
    assert len(problems) == 8 and problems.origin == f"local file {FIXTURE}"
    first = problems[0]
    assert (first.id, first.solution) == ("conala/test/0", "sorted(numbers, reverse=True)")
    assert first.question == "sort list `numbers` in descending order"
    assert first.metadata == {"intent": "How to sort a list in descending order?", "question_id": 1}
    assert problems[4].question == "How to get the current working directory in Python?"
    assert load_conala_problems("train", FIXTURE)[0].id == "conala/train/0"


def test_the_curated_sets_own_json_array_files_load_too(tmp_path):
    rows = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    path = tmp_path / "conala-test.json"
    path.write_text(json.dumps(rows, indent=2))
    assert (
        load_conala_problems("test", path).problems
        == load_conala_problems("test", FIXTURE).problems
    )
    env = gym.make("RISE-CoNaLa-v0", data_files=path).unwrapped
    assert env.data_origin == f"local file {path}" and len(env.problems) == 8


def test_missing_data_names_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setattr("rise_gym.data.sources._load_from_hub", lambda hub: None)
    with pytest.raises(DatasetNotFound, match=r"conala-test\.json.*rise-gym\[hub\].*neulab/conala"):
        gym.make("RISE-CoNaLa-v0")
    for missing in (tmp_path / "conala-test.json", tmp_path / "conala.jsonl"):
        with pytest.raises(DatasetNotFound, match="does not exist.*conala-corpus"):
            load_conala_problems("test", missing)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("bad.jsonl", '{"intent": "x", "snippet": null}\n', r"bad\.jsonl, line 1: .*snippet"),
        ("bad.json", '[{"intent": "x", "snippet": "y"}, {"intent": "x"}]', r"row 2: .*snippet"),
        ("bad.json", '[{"intent": "", "rewritten_intent": null, "snippet": "y"}]', "both empty"),
        ("bad.json", '{"intent": "x"}', "non-empty JSON array"),
        ("bad.json", "[1, 2", "not a readable JSON file"),
    ],
)
def test_bad_files_name_the_row_and_the_fix(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataFileError, match=message):
        load_conala_problems("test", path)


def test_bad_arguments():
    with pytest.raises(ValueError, match="no split 'validation'"):
        make(split="validation")
    with pytest.raises(ValueError, match="feedback must be one of"):
        make(feedback="verbose")
    with pytest.raises(ValueError, match="timeout must be > 0"):
        make(timeout=0)


def test_check_env_passes():
    check_env(make(num_problems=3), skip_render_check=False)


# ---- the reward -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "index, snippet, correct",
    [
        (0, "sorted(numbers, reverse=True)", True),  # the reference itself
        (0, "sorted( numbers, reverse = True )  # biggest first", True),  # the same code
        (0, "sorted(numbers)[::-1]", True),  # the same behaviour
        (0, "sorted(numbers)", False),
        (0, "[3, 2, 1]", False),  # right for one input only
        (1, "list(map(int, s.split(',')))", True),
        (1, "s.split(',')", False),
        (2, "x.sort(reverse=False)", True),
        (2, "sorted(x)", False),  # the reference sorts in place
        (3, "re.findall('[0-9]+', s)", True),
        (3, "re.findall('[0-9]', s)", False),
        (4, "os.getcwd()", True),
        (4, "os.getcwdb()", False),
        (5, "df.groupby('A').sum()", True),  # runs on no generated input: code match only
        (5, "df.groupby(['A']).sum()", False),
        (6, "print(*words)", True),  # same printed output
        (6, "' '.join(words)", False),  # returns instead of printing
        (7, "d = {k: v for k, v in zip(keys, values)}", True),
        (7, "dict(zip(keys, values))", False),  # d is never assigned
        (0, "", False),
        (0, "sorted(numbers, reverse=True", False),  # not Python
        (0, "while True:\n    pass", False),  # stopped by the per-input time limit
        (0, "exit(0)", False),
        (0, "numbers.sort(reverse=True)", False),  # value None, and numbers changed
    ],
)
def test_reward(index, snippet, correct):
    env = make()
    problem = env.problems[index]
    assert env.grade(fenced(snippet), problem).correct is correct


def test_feedback_kinds_show_the_first_disagreeing_input():
    env = make(feedback="test_output", max_turns=2)
    env.reset(options={"index": 2})
    observation, reward, _, _, info = env.step(fenced("sorted(x)"))
    assert reward == 0.0 and info["answer"] == "sorted(x)"
    assert info["feedback"].startswith("The snippet does not do what the task asks:\nwith x=")
    assert "expected x to become" in info["feedback"] and "Traceback" not in info["feedback"]
    assert observation[-1]["content"].startswith(info["feedback"])
    assert make(feedback="pass_fail").grade("`x.sort()`", env.problems[2]).feedback == (
        "The snippet does what the task asks."
    )
    assert make(feedback="none").grade("sorted(x)", env.problems[2]).feedback == ""


def test_episode_without_oracle_runs_every_turn():
    env = make(max_turns=3)
    observation, info = env.reset(options={"index": 1})
    assert "comma-separated string `s`" in observation[0]["content"]
    assert info["problem_id"] == "conala/test/1"
    rewards = [
        env.step(fenced(code))[1]
        for code in ("s.split(',')", "[int(p) for p in s.split(',')]", "eval('[' + s + ']')")
    ]
    assert rewards == [0.0, 1.0, 1.0]


def test_snippet_extraction_and_code_match():
    assert extract_snippet("The answer:\n```python\n>>> x.sort()\n```") == "x.sort()"
    assert extract_snippet("`os.getcwd()`") == "os.getcwd()"
    assert extract_snippet("  x[::-1]  ") == "x[::-1]"
    assert same_code("f(a, 'b')", 'f(a,"b")') and not same_code("f(a)", "f(b)")


def test_doctests(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert doctest.testmod(conala_env).failed == 0
