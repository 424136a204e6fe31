"""Math word problems (GSM8K, MATH, MATH-500) graded by final-answer match."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any, ClassVar

from rise_gym.data.math import load_math_problems
from rise_gym.envs.base import Grade, MultiTurnEnv
from rise_gym.problems import Problem

logger = logging.getLogger(__name__)

MATH_PROMPT_TEMPLATE = (
    "{question}\n\nSolve the problem step by step, then put your final answer within \\boxed{{}}."
)
"""The default first prompt of the math environments."""


class MathGraderMixin:
    """Grades a response's final answer against ``problem.answer`` with `grade_math`."""

    problem: Problem
    _reported_ungradable: set[str]

    def grade(self, response: str, problem: Problem | None = None) -> Grade:
        """Grade the final answer in ``response`` (1 if it matches the reference)."""
        from rise_gym.graders.math import extract_answer, grade_answer

        problem = problem or self.problem
        answer = extract_answer(response)  # the vote key, and exactly what is graded
        score = grade_answer(answer, problem.answer or "")
        if score is None:
            if problem.id not in self._reported_ungradable:
                self._reported_ungradable.add(problem.id)
                logger.warning(
                    "problem %s has an unparseable reference answer %r; its turns are "
                    "reported as ungradable and left out of the metrics",
                    problem.id,
                    problem.answer,
                )
            return Grade(correct=False, answer=answer, gradable=False)
        return Grade(correct=score == 1.0, answer=answer)


class MathEnv(MathGraderMixin, MultiTurnEnv):
    """A multi-turn math environment over GSM8K, MATH or MATH-500.

    Example:
        >>> import gymnasium as gym, rise_gym
        >>> env = gym.make("RISE-GSM8K-v0", num_problems=2)
        >>> observation, info = env.reset(seed=0)
        >>> observation[0]["role"], info["problem_id"]
        ('user', 'gsm8k/test/0')
    """

    default_prompt_template: ClassVar[str] = MATH_PROMPT_TEMPLATE

    def __init__(
        self,
        dataset: str = "gsm8k",
        split: str = "test",
        data_files: str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ):
        """Create the environment.

        Args:
            dataset: ``"gsm8k"``, ``"math"`` or ``"math500"``.
            split: ``"train"`` or ``"test"``.
            data_files: A local JSONL/Parquet file in the data set's format, to pose
                your own problems (GSM8K rows: question/answer; MATH rows:
                problem/solution and optionally answer).
            **kwargs: Episode options of `MultiTurnEnv` (max_turns, stop_on_correct,
                history_window, prompt_template, retry_prompt, system_prompt, shuffle,
                num_problems, render_mode).
        """
        self.dataset = dataset
        self.split = split
        self.data_files = data_files
        self._reported_ungradable = set()
        super().__init__(**kwargs)

    def load_problems(self) -> Sequence[Problem]:
        """The problems of the configured data set and split; sets `data_origin`."""
        loaded = load_math_problems(self.dataset, self.split, self.data_files)
        self.data_origin = loaded.origin
        return loaded.problems
