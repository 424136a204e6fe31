"""Math word problems (GSM8K, MATH, MATH-500) graded by final-answer match."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any, ClassVar, Literal, get_args

from rise_gym.data.math import load_math_problems
from rise_gym.envs.base import Grade, MultiTurnEnv, check_choice
from rise_gym.problems import Problem

logger = logging.getLogger(__name__)

MATH_PROMPT_TEMPLATE = (
    "{question}\n\nSolve the problem step by step, then put your final answer within \\boxed{{}}."
)
"""The default first prompt of the math environments."""

MathFeedbackKind = Literal["none", "answer", "format"]
MATH_FEEDBACK_KINDS: tuple[str, ...] = get_args(MathFeedbackKind)
"""The ``feedback`` kinds of the math environments (see `MathGraderMixin`)."""

NO_ANSWER_FEEDBACK = (
    "No final answer in the expected format was found in your response: give exactly one "
    'final answer, as \\boxed{...} or on a last line "#### ...".'
)
"""The feedback (kinds ``"answer"`` and ``"format"``) on a response without a final answer."""


class MathGraderMixin:
    r"""Grades a response's final answer against ``problem.answer`` with `grade_answer`.

    The ``feedback`` option chooses what the next prompt says about an attempt, before
    the retry prompt (or in its ``{feedback}`` placeholder):

    - ``"none"`` (the default, the paper's setting): nothing; only the retry prompt.
    - ``"answer"``: the final answer as the grader read it (normalised, e.g. ``0.5``
      for ``\frac{1}{2}``) and whether it is correct: "Your answer 42 is incorrect."
    - ``"format"``: only whether a final answer was found, not whether it is correct.

    Both say `NO_ANSWER_FEEDBACK` when no single final answer could be read (none
    given, an empty or unclosed box, or different answers offered together). Neither
    ever shows the reference answer.
    """

    problem: Problem

    def __init__(self, *, feedback: MathFeedbackKind = "none", **kwargs: Any):
        """Check and keep the feedback kind, then pass the other options on.

        Args:
            feedback: ``"none"``, ``"answer"`` or ``"format"`` (see the class docstring).
            **kwargs: The options of the next class in the method resolution order
                (the episode options of `MultiTurnEnv`).

        Raises:
            ValueError: ``feedback`` is not one of `MATH_FEEDBACK_KINDS`.
        """
        check_choice("feedback", feedback, MATH_FEEDBACK_KINDS)
        self.feedback = feedback
        self._reported_ungradable: set[str] = set()
        super().__init__(**kwargs)

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
            feedback = self._feedback_for(answer, correct=None)
            return Grade(correct=False, answer=answer, feedback=feedback, gradable=False)
        correct = score == 1.0
        return Grade(correct=correct, answer=answer, feedback=self._feedback_for(answer, correct))

    def _feedback_for(self, answer: str | None, correct: bool | None) -> str:
        """The feedback on an extracted ``answer``; ``correct`` is None when ungradable."""
        if self.feedback == "none":
            return ""
        if answer is None:
            return NO_ANSWER_FEEDBACK
        if self.feedback == "format":
            return "A final answer was found in your response."
        if correct is None:
            return f"Your answer {answer} could not be checked."
        return f"Your answer {answer} is {'correct' if correct else 'incorrect'}."


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
        feedback: MathFeedbackKind = "none",
        **kwargs: Any,
    ):
        """Create the environment.

        Args:
            dataset: ``"gsm8k"``, ``"math"`` or ``"math500"``.
            split: ``"train"`` or ``"test"``.
            data_files: A local JSONL/Parquet file in the data set's format, to pose
                your own problems (GSM8K rows: question/answer; MATH rows:
                problem/solution and optionally answer).
            feedback: What follows an attempt before the retry prompt: ``"none"`` (the
                paper's main setting), ``"answer"`` (the answer read and whether it is
                correct) or ``"format"`` (whether a final answer was found); see
                `MathGraderMixin`.
            **kwargs: Episode options of `MultiTurnEnv` (max_turns, stop_on_correct,
                history_window, prompt_template, retry_prompt, system_prompt, shuffle,
                num_problems, render_mode).
        """
        self.dataset = dataset
        self.split = split
        self.data_files = data_files
        super().__init__(feedback=feedback, **kwargs)

    def load_problems(self) -> Sequence[Problem]:
        """The problems of the configured data set and split; sets `data_origin`."""
        loaded = load_math_problems(self.dataset, self.split, self.data_files)
        self.data_origin = loaded.origin
        return loaded.problems
