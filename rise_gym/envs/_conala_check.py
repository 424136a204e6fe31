"""The CoNaLa execution check, sent as source into the code sandbox (stdlib only).

`check(reference, candidate)` runs both snippets on generated values of the reference's
free variables and raises AssertionError at the first disagreement, or when the
reference ran on no generated input at all. The environment appends the call to this
module's source and grades it with `rise_gym.graders.code.grade_code`, so the
candidate (untrusted) only ever runs in the sandbox.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import copy
import importlib
import io
import itertools
import random
import signal
import time
from typing import Any

PROBE_VALUES: tuple[Any, ...] = (
    3,
    -2,
    7,
    2.5,
    "hello world",
    "a,b,c",
    "Python 3.10!",
    "1,2,3",
    "  Mixed CASE text  ",
    [3, 1, 2],
    [5, 5, 0, -1],
    ["b", "a", "c"],
    [[1, 2], [3, 4]],
    [("a", 2), ("b", 1)],
    {"a": 1, "b": 2},
    [{"name": "b", "value": 2}, {"name": "a", "value": 1}],
    [{"name": "c", "value": 0}, {"name": "a", "value": 5}, {"name": "b", "value": 5}],
)
"""The values every free variable of a reference snippet is tried with."""

MODULE_ALIASES = {"np": "numpy", "pd": "pandas", "plt": "matplotlib.pyplot"}
"""Conventional short names bound to their modules."""

_MISSING = "<unbound>"


def check(
    reference: str,
    candidate: str,
    *,
    max_agreements: int = 32,
    max_trials: int = 2000,
    budget_seconds: float = 2.0,
    run_seconds: float = 0.5,
) -> int:
    """Compare two snippets on generated inputs; return how many inputs they agreed on.

    An input counts when the reference runs on it without error, twice with the same
    outcome (so random or clock-dependent results are left out). The candidate must
    then give the same outcome: the value of its last expression (when the reference's
    is not None), the inputs afterwards (in-place changes), the names the reference
    binds, and what it prints.

    Raises:
        AssertionError: The candidate does not parse, raises or disagrees on an input, or
            the reference ran on none (then only an exact match of the code can count).
    """
    reference_code = _compile(reference)
    try:
        candidate_code = _compile(candidate)
    except SyntaxError as error:
        raise AssertionError(f"the snippet is not valid Python: {error.msg}") from None
    names, reference_modules = _inputs(reference)
    _, candidate_modules = _inputs(candidate)
    bound = _bound_names(reference, names)
    deadline = time.monotonic() + budget_seconds
    agreed = 0
    for values in _probes(len(names), max_trials):
        if agreed >= max_agreements or time.monotonic() > deadline:
            break
        inputs = dict(zip(names, values))
        try:
            expected = _run(reference_code, inputs, reference_modules, bound, run_seconds)
            again = _run(reference_code, inputs, reference_modules, bound, run_seconds)
        except BaseException:  # the reference does not apply to these inputs
            continue
        if _difference(expected, again) is not None:
            continue
        shown = ", ".join(f"{name}={value!r}" for name, value in inputs.items()) or "no inputs"
        try:
            got = _run(candidate_code, inputs, candidate_modules, bound, run_seconds)
        except BaseException as error:
            raise AssertionError(
                f"with {shown} the snippet raised {type(error).__name__}: {error}; "
                f"expected {expected[0]!r}"
            ) from None
        difference = _difference(expected, got)
        if difference is not None:
            raise AssertionError(f"with {shown}: {difference}")
        agreed += 1
    if agreed == 0:
        raise AssertionError(
            "the reference snippet ran on none of the generated inputs, so only a snippet "
            "that matches it exactly (as code) counts"
        )
    return agreed


def _compile(snippet: str) -> tuple[Any, Any]:
    """The snippet's statements but the last expression, and that expression (or None)."""
    tree = ast.parse(snippet)
    last = None
    final = tree.body[-1] if tree.body else None
    if isinstance(final, ast.Expr):
        tree.body.pop()
        last = ast.Expression(final.value)
    body = compile(tree, "<snippet>", "exec")
    return body, None if last is None else compile(last, "<snippet>", "eval")


def _inputs(snippet: str) -> tuple[list[str], dict[str, Any]]:
    """The snippet's free variables (sorted) and the modules its free names stand for."""
    tree = ast.parse(snippet)
    local: set[str] = set()
    first_use: dict[str, str] = {}
    attributes: dict[str, set[str]] = {}
    for node in sorted(ast.walk(tree), key=lambda n: (getattr(n, "lineno", 0), _column(n))):
        if isinstance(node, ast.arg):
            local.add(node.arg)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            local.add(node.name)
        elif isinstance(node, ast.alias):
            local.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.comprehension):
            local.update(n.id for n in ast.walk(node.target) if isinstance(n, ast.Name))
        elif isinstance(node, ast.Name):
            first_use.setdefault(node.id, "load" if isinstance(node.ctx, ast.Load) else "store")
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            attributes.setdefault(node.value.id, set()).add(node.attr)
    free = [
        name
        for name, use in first_use.items()
        if use == "load" and name not in local and not hasattr(builtins, name)
    ]
    modules = {}
    for name in free:
        module = _module(name, attributes.get(name, set()))
        if module is not None:
            modules[name] = module
    return sorted(name for name in free if name not in modules), modules


def _column(node: ast.AST) -> int:
    return getattr(node, "col_offset", 0)


def _module(name: str, attributes: set[str]) -> Any:
    """The module ``name`` stands for, if it imports and has every attribute used on it."""
    if not attributes:
        return None
    try:
        module = importlib.import_module(MODULE_ALIASES.get(name, name))
    except BaseException:
        return None
    return module if all(hasattr(module, attribute) for attribute in attributes) else None


def _bound_names(snippet: str, inputs: list[str]) -> list[str]:
    """Names the snippet assigns at its top level, other than its inputs."""
    names: set[str] = set()
    for statement in ast.parse(snippet).body:
        if isinstance(statement, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.For, ast.With)):
            names.update(
                node.id
                for node in ast.walk(statement)
                if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store)
            )
    return sorted(names - set(inputs))


def _probes(count: int, max_trials: int) -> Any:
    """Tuples of probe values, one per input, in a fixed pseudo-random order."""
    generator = random.Random(0)
    if len(PROBE_VALUES) ** count <= max_trials:
        combinations = list(itertools.product(PROBE_VALUES, repeat=count))
        generator.shuffle(combinations)
        yield from combinations
        return
    for _ in range(max_trials):
        yield tuple(generator.choice(PROBE_VALUES) for _ in range(count))


def _run(
    code: tuple[Any, Any],
    inputs: dict[str, Any],
    modules: dict[str, Any],
    bound: list[str],
    seconds: float,
) -> tuple[Any, dict[str, Any], dict[str, Any], str]:
    """Run a compiled snippet on fresh copies of the inputs, under a time limit."""
    body, last = code
    namespace: dict[str, Any] = {**modules, **copy.deepcopy(inputs)}
    printed = io.StringIO()
    with _time_limit(seconds), contextlib.redirect_stdout(printed):
        exec(body, namespace)
        value = None if last is None else eval(last, namespace)
        value = _materialised(value)
    after = {name: namespace.get(name, _MISSING) for name in inputs}
    assigned = {name: namespace.get(name, _MISSING) for name in bound}
    return value, after, assigned, printed.getvalue()


def _materialised(value: Any) -> Any:
    """An iterator's items as a list (``map``, ``filter``, generators), at most 10,000."""
    if hasattr(value, "__next__") and hasattr(value, "__iter__"):
        return list(itertools.islice(value, 10_000))
    return value


@contextlib.contextmanager
def _time_limit(seconds: float) -> Any:
    def expire(signum: int, frame: Any) -> None:
        raise TimeoutError(f"ran past {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _difference(expected: tuple[Any, ...], got: tuple[Any, ...]) -> str | None:
    """How ``got`` differs from ``expected``, or None when they agree."""
    value, after, assigned, printed = expected
    if value is not None and not _same(value, got[0]):
        return f"expected {value!r}, got {got[0]!r}"
    for name, state in after.items():
        if not _same(state, got[1][name]):
            return f"expected {name} to become {state!r}, got {got[1][name]!r}"
    for name, state in assigned.items():
        if not _same(state, got[2][name]):
            return f"expected {name} = {state!r}, got {got[2][name]!r}"
    if printed != got[3]:
        return f"expected the output {printed[:200]!r}, got {got[3][:200]!r}"
    return None


def _same(first: Any, second: Any) -> bool:
    """Equal by repr, else by ``==`` (arrays: every element)."""
    try:
        if repr(first) == repr(second):
            return True
        equal = first == second
        if isinstance(equal, bool):
            return equal
        return bool(equal.all())
    except BaseException:
        return False
