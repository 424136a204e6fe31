r"""CoNaLa: write the Python snippet for a natural-language intent; graded by execution.

The curated CoNaLa set (Yin et al., 2018) pairs a StackOverflow intent, rewritten to name
its variables (``sort list `x` in place``), with a reference snippet, usually one line,
and has no unit tests. The RISE rebuttal reports CoNaLa without saying how it was
scored. The reward here (1 or 0) is, in this order:

1. **The same code**: the response's snippet and the reference have the same abstract
   syntax tree (formatting, quotes, redundant parentheses and comments do not matter;
   snippets that do not parse are compared with whitespace collapsed).
2. **The same behaviour**: otherwise both run in the code sandbox
   (`rise_gym.graders.code.grade_code`) on generated values of the reference's free
   variables (the names it reads before assigning them: ``x`` in ``x.sort()``; names
   that stand for an importable module with every attribute used on them, such as
   ``re`` or ``os``, are bound to the module, ``np``/``pd``/``plt`` to numpy, pandas and
   matplotlib.pyplot). The values come from a fixed bank (ints, a float, strings,
   lists of ints, strings, pairs and dicts, a dict), every combination in a seeded
   order, at most 2,000 tried and 32 kept. An input is kept when the reference runs on
   it without error and twice with the same outcome. On every kept input the response
   must give the same outcome: the value of its last expression (when the reference's
   is not None), the inputs afterwards (so ``x.sort()`` is not ``sorted(x)``), the
   names the reference assigns, and what it prints. A response that raises where the
   reference ran is wrong.
3. When the reference runs on none of the generated inputs (it needs a DataFrame, a
   file, a network, a Django model, a clock), only rule 1 can give a 1.

Why this reward: a normalised textual match (exact, or BLEU above a threshold, CoNaLa's
own metric) scores correct alternatives as wrong (``list(map(int, s.split(',')))`` for
``[int(i) for i in s.split(',')]``) and near misses as right, and a multi-turn learner
would be rewarded for copying the reference's surface form; execution on generated
inputs rewards what the snippet does, as the unit tests of HumanEval and MBPP do, and
the AST match keeps a reward for the snippets that cannot run in a sandbox. What it
cannot see: behaviour outside the probe bank (a snippet right on these values and wrong
on others passes), and a reference that only runs on inputs of a type the bank lacks
falls back to rule 1. Each run has 0.5 s, and the whole check a third of ``timeout``
(at most 2 s). The checker and the snippet share one interpreter in the sandbox, so, as
for the unit tests of the other code environments, a snippet written against this
checker could forge agreement. ``feedback="test_output"`` shows the first disagreeing
input.

How a response becomes a snippet: the last fenced Python block (as the other code
environments), else the whole response; a response that is one `` `span` `` loses its
backticks, and ``>>>`` prompts are removed.
"""

from __future__ import annotations

import ast
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rise_gym.data.conala import load_conala_problems
from rise_gym.envs.base import Grade, MultiTurnEnv, check_choice
from rise_gym.envs.code import FEEDBACK_KINDS, FeedbackKind, extract_code
from rise_gym.graders.code import DEFAULT_TIMEOUT, grade_code
from rise_gym.problems import Problem

CONALA_PROMPT_TEMPLATE = (
    "Write a short Python snippet (usually one line) that does the following. Use the "
    "variable names the task mentions, as they are; do not define a function.\n\n"
    "{question}\n\nReply with the snippet in a single ```python code block."
)
"""The default first prompt of `ConalaEnv`."""

_CHECKER_SOURCE = (Path(__file__).parent / "_conala_check.py").read_text(encoding="utf-8")
_INLINE_SPAN = re.compile(r"^`([^`\n]+)`$")


class ConalaEnv(MultiTurnEnv):
    r"""A multi-turn CoNaLa environment; reward 1 for the reference's code or behaviour.

    Example:
        >>> from pathlib import Path
        >>> import gymnasium as gym, rise_gym
        >>> fixture = Path("tests/fixtures/conala_sample.jsonl")
        >>> env = gym.make("RISE-CoNaLa-v0", data_files=fixture).unwrapped
        >>> _ = env.reset(options={"index": 0})
        >>> env.problem.solution
        'sorted(numbers, reverse=True)'
        >>> env.step("```python\nsorted(numbers)[::-1]\n```")[1]
        1.0
    """

    default_prompt_template = CONALA_PROMPT_TEMPLATE

    def __init__(
        self,
        split: str = "test",
        data_files: str | os.PathLike[str] | None = None,
        feedback: FeedbackKind = "none",
        timeout: float = DEFAULT_TIMEOUT,
        **kwargs: Any,
    ):
        """Create the environment.

        Args:
            split: ``"train"`` or ``"test"``.
            data_files: The curated set's ``conala-*.json`` file, or JSONL/Parquet rows
                with ``intent``, ``rewritten_intent`` and ``snippet``; without it the
                hub's ``neulab/conala`` is read (needs ``datasets`` and a network).
            feedback: What follows a wrong attempt before the retry prompt: ``"none"``,
                ``"pass_fail"`` (one line) or ``"test_output"`` (the first input where
                the snippet and the reference disagree).
            timeout: Wall-clock seconds for one execution check in the sandbox.
            **kwargs: Episode options of `MultiTurnEnv` (max_turns, stop_on_correct,
                history_window, prompt_template, retry_prompt, system_prompt, shuffle,
                num_problems, render_mode).

        Raises:
            DatasetNotFound: No data file and no hub copy (the message says how to get it).
        """
        check_choice("feedback", feedback, FEEDBACK_KINDS)
        if not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        self.split = split
        self.data_files = data_files
        self.feedback = feedback
        self.timeout = float(timeout)
        super().__init__(**kwargs)

    def load_problems(self) -> Sequence[Problem]:
        """The problems of the configured split; sets `data_origin`."""
        loaded = load_conala_problems(self.split, self.data_files)
        self.data_origin = loaded.origin
        return loaded.problems

    def grade(self, response: str, problem: Problem | None = None) -> Grade:
        """Grade the snippet in ``response`` by the rules in the module docstring.

        Raises:
            SandboxError: The sandbox itself failed (never scored as right or wrong).
        """
        problem = problem or self.problem
        snippet = extract_snippet(response)
        reference = problem.solution or ""
        if same_code(snippet, reference):
            return Grade(True, snippet, self._feedback(True, ""))
        if not snippet.strip():
            return Grade(False, snippet, self._feedback(False, "The response holds no code."))
        budget = max(0.1, min(2.0, self.timeout / 3))
        tests = (
            f"{_CHECKER_SOURCE}\n\ncheck({reference!r}, {snippet!r}, budget_seconds={budget!r})\n"
        )
        result = grade_code("", tests, timeout=self.timeout)
        return Grade(result.passed, snippet, self._feedback(result.passed, result.feedback))

    def _feedback(self, passed: bool, detail: str) -> str:
        if self.feedback == "none":
            return ""
        if passed:
            return "The snippet does what the task asks."
        if self.feedback == "pass_fail":
            return "The snippet does not do what the task asks."
        return f"The snippet does not do what the task asks:\n{_last_line(detail)}"


def extract_snippet(response: str) -> str:
    r"""The snippet in a response (see the module docstring), stripped.

    Example:
        >>> extract_snippet("Use `x.sort()`")
        'Use `x.sort()`'
        >>> extract_snippet("`x.sort()`")
        'x.sort()'
        >>> extract_snippet("```python\n>>> x.sort()\n```")
        'x.sort()'
    """
    code = extract_code(response).strip()
    span = _INLINE_SPAN.match(code)
    if span:
        code = span.group(1).strip()
    lines = [line[4:] if line.startswith(">>> ") else line for line in code.splitlines()]
    return "\n".join(lines).strip()


def same_code(first: str, second: str) -> bool:
    """Whether two snippets have the same syntax tree (whitespace-collapsed text if not Python).

    Example:
        >>> same_code("sorted( x, reverse = True )  # newest first", 'sorted(x, reverse=True)')
        True
        >>> same_code("print 'hi'", "print  'hi'")
        True
    """
    try:
        with warnings.catch_warnings():  # old snippets hold escapes such as '\d'
            warnings.simplefilter("ignore", (SyntaxWarning, DeprecationWarning))
            return ast.dump(ast.parse(first)) == ast.dump(ast.parse(second))
    except (SyntaxError, ValueError):
        return " ".join(first.split()) == " ".join(second.split())


def _last_line(detail: str) -> str:
    """The checker's message without the sandbox's traceback framing."""
    lines = [line for line in detail.strip().splitlines() if line.strip()]
    if not lines:
        return detail
    return lines[-1].removeprefix("AssertionError: ")
