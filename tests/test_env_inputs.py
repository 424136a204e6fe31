"""Bad data files and bad arguments: each gets a clear error naming where it is and the fix."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import rise_gym  # noqa: F401  (registers the environments)
from rise_gym.envs.arithmetic import ArithmeticEnv
from rise_gym.errors import DataFileError, DatasetNotFound

GOOD_ROW = {"question": "What is 6 x 7?", "answer": "6 x 7 = 42\n#### 42"}


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def load_error(env_id: str, path: Path) -> str:
    with pytest.raises(DataFileError) as caught:
        gym.make(env_id, data_files=path)
    message = str(caught.value)
    assert str(path) in message
    assert "delete" not in message.lower()
    return message


# ---- wrong fields ----------------------------------------------------------------------

FIELD_CASES = {
    "answer is a number": (
        {"question": "q", "answer": 2},
        r'field "answer" must be a string.*int 2.*"answer": "2"',
    ),
    "answer is null": ({"question": "q", "answer": None}, 'field "answer" is null'),
    "question is null": ({"question": None, "answer": "#### 1"}, 'field "question" is null'),
    "question is a list": (
        {"question": ["q"], "answer": "#### 1"},
        'field "question" must be a string, got list',
    ),
    "answer is missing": ({"question": "q"}, 'field "answer" is missing'),
    "answer is a bool": (
        {"question": "q", "answer": True},
        'field "answer" must be a string, got bool',
    ),
    "answer has no final answer": (
        {"question": "q", "answer": "work\n#### "},
        'field "answer" has no final answer',
    ),
    "idx is an object": (
        {"question": "q", "answer": "#### 1", "idx": {"a": 1}},
        'field "idx" must be',
    ),
}


@pytest.mark.parametrize(("row", "message"), FIELD_CASES.values(), ids=FIELD_CASES.keys())
def test_gsm8k_rows_with_wrong_fields_name_the_file_line_and_field(tmp_path, row, message):
    path = write_jsonl(tmp_path / "mine.jsonl", [GOOD_ROW, row])
    text = load_error("RISE-GSM8K-v0", path)
    assert ", line 2: " in text
    assert re.search(message, text), text


def test_the_line_number_counts_blank_lines(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text(
        json.dumps(GOOD_ROW) + "\n\n\n" + json.dumps({"question": "q", "answer": 7}) + "\n"
    )
    assert ", line 4: " in load_error("RISE-GSM8K-v0", path)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"problem": 3, "solution": "\\boxed{1}"}, 'field "problem" must be a string'),
        ({"problem": "p", "solution": None}, 'field "solution" is null'),
        (
            {"problem": "p", "solution": "s", "answer": 5},
            'field "answer" must be a string, got int',
        ),
    ],
)
def test_math_rows_with_wrong_fields(tmp_path, row, message):
    path = write_jsonl(tmp_path / "math.jsonl", [row])
    assert message in load_error("RISE-MATH-v0", path)


def test_math_row_without_answer_or_box_is_kept_as_ungradable(tmp_path):
    path = write_jsonl(tmp_path / "math.jsonl", [{"problem": "p", "solution": "no box"}])
    env = gym.make("RISE-MATH-v0", data_files=path)
    env.reset()
    info = env.step("\\boxed{1}")[-1]
    assert info["gradable"] is False


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"task_id": 1, "text": "t", "code": "def f(): pass", "test_list": None}, '"test_list"'),
        (
            {"task_id": 1, "text": 2, "code": "def f(): pass", "test_list": ["assert f()"]},
            'field "text"',
        ),
        (
            {"task_id": 1, "text": "t", "code": None, "test_list": ["assert f()"]},
            'field "code" is null',
        ),
    ],
)
def test_mbpp_rows_with_wrong_fields(tmp_path, row, message):
    path = write_jsonl(tmp_path / "mbpp.jsonl", [row])
    assert message in load_error("RISE-MBPP-v0", path)


# ---- unreadable files ------------------------------------------------------------------


def test_binary_and_non_utf8_files(tmp_path):
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(bytes(range(256)) * 4)
    assert "binary" in load_error("RISE-GSM8K-v0", binary)
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(
        json.dumps(GOOD_ROW).encode() + b'\n{"question": "caf\xe9", "answer": "#### 1"}\n'
    )
    message = load_error("RISE-GSM8K-v0", latin)
    assert (
        ":2 is not UTF-8" in message and "0xe9" in message and "save the file as UTF-8" in message
    )


def test_gzip_files_binary_non_utf8_not_gzip_or_truncated(tmp_path):
    latin = tmp_path / "latin.jsonl.gz"
    latin.write_bytes(gzip.compress(b'{"question": "caf\xe9", "answer": "#### 1"}\n'))
    assert ":1 is not UTF-8" in load_error("RISE-GSM8K-v0", latin)
    binary = tmp_path / "binary.jsonl.gz"
    binary.write_bytes(gzip.compress(bytes(range(256))))
    assert "binary" in load_error("RISE-GSM8K-v0", binary)
    plain = tmp_path / "plain.jsonl.gz"
    plain.write_text(json.dumps(GOOD_ROW) + "\n")
    assert "not a complete gzip file" in load_error("RISE-GSM8K-v0", plain)
    truncated = tmp_path / "truncated.jsonl.gz"
    truncated.write_bytes(gzip.compress((json.dumps(GOOD_ROW) + "\n").encode() * 50)[:40])
    assert "not a complete gzip file" in load_error("RISE-GSM8K-v0", truncated)
    misnamed = tmp_path / "misnamed.jsonl"
    misnamed.write_bytes(gzip.compress(b"{}\n"))
    assert "rename it to misnamed.jsonl.gz" in load_error("RISE-GSM8K-v0", misnamed)


def test_a_valid_gzip_file_loads(tmp_path):
    path = tmp_path / "mine.jsonl.gz"
    path.write_bytes(gzip.compress((json.dumps(GOOD_ROW) + "\n").encode()))
    assert gym.make("RISE-GSM8K-v0", data_files=path).unwrapped.problems[0].answer == "42"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"question": "q", "answer": \n', ":1 is not valid JSON"),
        ('[{"question": "q", "answer": "#### 1"}]\n', ":1 must be a JSON object, got list"),
        ('"just a string"\n', ":1 must be a JSON object, got str"),
        ("", "holds no rows"),
        ("\n\n", "holds no rows"),
    ],
)
def test_malformed_json_lines_say_how_to_fix_them(tmp_path, content, message):
    path = tmp_path / "mine.jsonl"
    path.write_text(content)
    assert message in load_error("RISE-GSM8K-v0", path)


def test_a_directory_or_a_non_path_is_refused(tmp_path):
    with pytest.raises(DatasetNotFound, match="is a directory"):
        gym.make("RISE-GSM8K-v0", data_files=tmp_path)
    with pytest.raises(TypeError, match="data_files must be a path"):
        gym.make("RISE-GSM8K-v0", data_files=5)


def test_an_unreadable_parquet_file_is_named(tmp_path):
    pytest.importorskip("pyarrow")
    path = tmp_path / "mine.parquet"
    path.write_bytes(b"not parquet at all")
    assert "not a readable Parquet file" in load_error("RISE-GSM8K-v0", path)


# ---- bad arguments ---------------------------------------------------------------------

BAD_ARGUMENTS = [
    ({"max_turns": 2.5}, TypeError, "max_turns must be an int, got float"),
    ({"max_turns": True}, TypeError, "max_turns must be an int, got bool"),
    ({"max_turns": "3"}, TypeError, "max_turns must be an int, got str"),
    ({"max_turns": None}, TypeError, "max_turns must be an int, got NoneType"),
    ({"max_turns": 0}, ValueError, "max_turns must be >= 1"),
    ({"history_window": 1.5}, TypeError, "history_window must be an int or None"),
    ({"history_window": False}, TypeError, "history_window must be an int or None, got bool"),
    ({"history_window": -1}, ValueError, "history_window must be >= 0"),
    ({"num_problems": True}, TypeError, "num_problems must be an int or None, got bool"),
    ({"num_problems": 0}, ValueError, "num_problems must be >= 1"),
    ({"stop_on_correct": "yes"}, TypeError, "stop_on_correct must be True or False"),
    ({"shuffle": None}, TypeError, "shuffle must be True or False"),
    ({"retry_prompt": "{question} {answer}"}, ValueError, r"unknown placeholder\(s\) \{answer\}"),
    ({"retry_prompt": "Try again: {}"}, ValueError, r"unknown placeholder\(s\) \{\}"),
    ({"retry_prompt": "{0}"}, ValueError, r"unknown placeholder\(s\) \{0\}"),
    ({"retry_prompt": "{question.upper}"}, ValueError, "unknown placeholder"),
    ({"retry_prompt": "{question[0]}"}, ValueError, "unknown placeholder"),
    ({"retry_prompt": "wrong {"}, ValueError, "retry_prompt is not a valid template"),
    ({"retry_prompt": "wrong }"}, ValueError, "retry_prompt is not a valid template"),
    ({"retry_prompt": "{question:{width}}"}, ValueError, "retry_prompt is not a valid template"),
    ({"retry_prompt": None}, TypeError, "retry_prompt must be a str"),
    ({"prompt_template": "{problem}"}, ValueError, r"prompt_template has unknown.*\{problem\}"),
    ({"prompt_template": "{question} {feedback}"}, ValueError, r"unknown.*\{feedback\}"),
    ({"prompt_template": 5}, TypeError, "prompt_template must be a str"),
    ({"system_prompt": 5}, TypeError, "system_prompt must be a str or None"),
    ({"difficulty": 2.5}, TypeError, "difficulty must be an int"),
    ({"difficulty": True}, TypeError, "difficulty must be an int, got bool"),
    ({"size": 1.5}, TypeError, "size must be an int"),
    ({"data_seed": -1}, ValueError, "data_seed must be >= 0"),
]


@pytest.mark.parametrize(("kwargs", "error", "message"), BAD_ARGUMENTS)
def test_bad_arguments_fail_at_make_with_the_valid_values(kwargs, error, message):
    with pytest.raises(error, match=message):
        gym.make("RISE-Arithmetic-v0", **kwargs)


def test_templates_with_valid_placeholders_and_literal_braces_work():
    env = ArithmeticEnv(
        difficulty=1,
        num_problems=1,
        prompt_template="Q: {question} {{not a placeholder}}",
        retry_prompt="{feedback!s}Again: {question}",
    )
    observation, _ = env.reset(seed=0)
    assert observation[0]["content"] == f"Q: {env.problem.question} {{not a placeholder}}"
    observation, *_ = env.step("1")
    assert observation[-1]["content"] == f"Again: {env.problem.question}"
    assert ArithmeticEnv(max_turns=np.int64(2), num_problems=1).max_turns == 2


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"index": True}, TypeError, r"options\['index'\] must be an int, got bool"),
        ({"index": False}, TypeError, r"options\['index'\] must be an int, got bool"),
        ({"index": np.bool_(True)}, TypeError, r"must be an int, got bool"),
        ({"index": 1.0}, TypeError, r"must be an int, got float"),
        ({"index": "0"}, TypeError, r"must be an int, got str"),
        ({"index": None}, TypeError, r"must be an int, got NoneType"),
        ({"index": -1}, IndexError, "valid: 0..1"),
        ({"problem_id": 3}, TypeError, r"options\['problem_id'\] must be a str"),
        ([("index", 0)], TypeError, "reset options must be a dict"),
    ],
)
def test_bad_reset_options(options, error, message):
    env = ArithmeticEnv(difficulty=1, num_problems=2)
    with pytest.raises(error, match=message):
        env.reset(options=options)
    assert env.reset(options={"index": np.int64(1)})[1]["index"] == 1
