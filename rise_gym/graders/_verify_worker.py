"""The child process behind the math grader's hard timeout: math-verify over a pipe.

Started by `rise_gym.graders._symbolic` and never imported by the parent. Protocol, one
JSON document per line each way:

- the child first writes ``"ready"`` once math-verify is imported;
- each request is ``{"gold": str, "pred": str | null, "cpu_seconds": float}``;
- the child answers ``{"gold": bool}`` (did the reference parse to an expression, rather
  than come back as mere text) and then, when it did and a prediction was sent,
  ``{"correct": bool}``.

math-verify runs with its own signal-based timeouts off; the parent enforces the timeout by
killing this process. As a second line of defence the child caps its own memory and the
CPU time of each request, so an orphaned child cannot spin or swell for long.

Only the standard library and math-verify are imported here, so the file runs without the
rest of rise-gym.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import sys
from typing import Any, TextIO

MEMORY_LIMIT_BYTES = 4 * 1024**3
"""Address-space cap of the child; an allocation past it raises MemoryError (a wrong answer)."""

GOLD_CACHE_SIZE = 4096
"""Parsed references kept between requests (a benchmark grades each problem many times)."""


def serve() -> None:
    """Answer grading requests from stdin until it closes."""
    protocol = _claim_stdout()
    _cap_memory(MEMORY_LIMIT_BYTES)
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # "timeouts are off" warnings
    from math_verify import parse, verify

    # Warm up before "ready": the first parse builds the grammar and the first verify
    # imports more of sympy, costs that would otherwise count against a request's timeout.
    _verify(verify, _parse(parse, "\\frac{\\sqrt{2}}{2}"), _parse(parse, "\\frac{1}{\\sqrt{2}}"))
    golds: dict[str, list[Any]] = {}
    _send(protocol, "ready")
    for line in sys.stdin:
        request = json.loads(line)
        _cap_cpu(request["cpu_seconds"])
        gold = golds.get(request["gold"])
        if gold is None:
            if len(golds) >= GOLD_CACHE_SIZE:
                golds.clear()
            gold = golds[request["gold"]] = _parse(parse, request["gold"])
        parsed = any(not isinstance(value, str) for value in gold)  # not just echoed text
        _send(protocol, {"gold": parsed})
        if parsed and request["pred"] is not None:
            pred = _parse(parse, request["pred"])
            _send(protocol, {"correct": bool(pred) and _verify(verify, gold, pred)})


def _parse(parse: Any, answer: str) -> list[Any]:
    try:
        return parse(f"${answer}$", parsing_timeout=None)
    except Exception:  # math-verify wraps most errors; RecursionError and MemoryError escape
        return []


def _verify(verify: Any, gold: list[Any], pred: list[Any]) -> bool:
    try:
        return bool(verify(gold, pred, timeout_seconds=None))
    except Exception:
        return False


def _claim_stdout() -> TextIO:
    """Keep the real stdout for the protocol and send anything else printed to stderr."""
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return protocol


def _send(protocol: TextIO, message: object) -> None:
    protocol.write(json.dumps(message) + "\n")


def _cap_memory(limit: int) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard == resource.RLIM_INFINITY or hard > limit:
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _cap_cpu(seconds: float) -> None:
    """Let the kernel kill this process once the current request used ``seconds`` of CPU."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = int(usage.ru_utime + usage.ru_stime + seconds) + 1
    if hard == resource.RLIM_INFINITY or soft <= hard:
        resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


if __name__ == "__main__":
    serve()
