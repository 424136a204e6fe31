"""The multi-turn text environment every RISE task builds on."""

from __future__ import annotations

import string
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from rise_gym.errors import EpisodeFinished, EpisodeNotStarted
from rise_gym.problems import Problem
from rise_gym.spaces import ChatSpace, Conversation, FreeText, Message, copy_conversation

DEFAULT_RETRY_PROMPT = (
    "Your answer was not correct. Look at your previous attempt, find the mistake, "
    "and solve the problem again.\n\n{question}"
)
"""The fixed introspection prompt appended after every attempt (``{question}`` restates it)."""

PROMPT_PLACEHOLDERS = ("question",)
"""The placeholders a ``prompt_template`` may use."""

RETRY_PLACEHOLDERS = ("question", "feedback")
"""The placeholders a ``retry_prompt`` may use."""


@dataclass(frozen=True)
class Grade:
    """The verdict on one response.

    Attributes:
        correct: Whether the response solves the problem.
        answer: What was extracted from the response (final answer or program), or None.
        feedback: Text an environment may show the model before its next attempt
            (e.g. the failing unit test); empty when there is none.
        gradable: False when the problem's own reference could not be parsed: such a
            turn is reported and left out of the metrics, never counted as wrong.
    """

    correct: bool
    answer: str | None
    feedback: str = ""
    gradable: bool = True


class MultiTurnEnv(gym.Env[Conversation, str]):
    """A problem posed over several turns; each action is the model's whole response.

    The observation is the conversation so far as chat messages. After an attempt the
    next observation is the first prompt, the last ``history_window`` attempts (each an
    assistant message followed by the retry prompt) and the newest attempt with its
    retry prompt. The reward is 1.0 for a correct final answer, else 0.0. With
    ``stop_on_correct=True`` (the oracle setting behind p1@tk) a correct answer
    terminates the episode; otherwise it runs to ``max_turns`` and ends truncated.

    Subclasses provide the problems (`load_problems`, which also sets `data_origin`),
    the first prompt (`prompt_template`) and the grader (`grade`).
    """

    metadata: dict[str, Any] = {"render_modes": ["ansi"], "render_fps": 1}
    default_prompt_template: ClassVar[str] = "{question}"
    data_origin: str | None = None
    """Where the problems came from: a local file, an installed package's file, a hub
    data set (as `rise_gym.data.ProblemSet.origin` words it) or a generator."""

    def __init__(
        self,
        *,
        max_turns: int = 5,
        stop_on_correct: bool = False,
        history_window: int | None = None,
        prompt_template: str | None = None,
        retry_prompt: str = DEFAULT_RETRY_PROMPT,
        system_prompt: str | None = None,
        shuffle: bool = False,
        num_problems: int | None = None,
        render_mode: str | None = None,
    ):
        """Configure the episode shape; subclasses load the problems before calling this.

        Args:
            max_turns: Attempts per episode before it ends truncated (the paper uses 5).
            stop_on_correct: End the episode at the first correct answer (oracle mode).
            history_window: How many earlier attempts stay in the observation; None
                keeps all of them, 0 keeps none (only the newest attempt).
            prompt_template: The first user message; ``{question}`` is replaced by the
                problem. Defaults to the environment's own template.
            retry_prompt: The user message after each attempt; ``{question}`` is replaced
                by the problem and ``{feedback}``, if present, by the grader's feedback.
            system_prompt: An optional system message opening every conversation.
            shuffle: Visit problems in an order drawn from the reset seed instead of in
                data order (when `reset` gets no explicit index).
            num_problems: Keep only the first ``num_problems`` problems of the split.
            render_mode: None or ``"ansi"`` (`render` returns the conversation as text).

        Raises:
            TypeError: An argument has the wrong type (e.g. ``max_turns=2.5`` or ``True``).
            ValueError: An argument is out of range, or a template has a placeholder other
                than those listed above (checked here, not at the first step).
        """
        check_int("max_turns", max_turns, minimum=1)
        check_int("history_window", history_window, minimum=0, optional=True)
        check_int("num_problems", num_problems, minimum=1, optional=True)
        check_bool("stop_on_correct", stop_on_correct)
        check_bool("shuffle", shuffle)
        prompt_template = prompt_template or self.default_prompt_template
        self._retry_fields = set(check_template("retry_prompt", retry_prompt, RETRY_PLACEHOLDERS))
        check_template("prompt_template", prompt_template, PROMPT_PLACEHOLDERS)
        if system_prompt is not None and not isinstance(system_prompt, str):
            raise TypeError(
                f"system_prompt must be a str or None, got {type(system_prompt).__name__}"
            )
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode must be None or 'ansi', got {render_mode!r}")
        problems = self.load_problems()
        if num_problems is not None:
            problems = problems[:num_problems]
        if not problems:
            raise ValueError(f"{type(self).__name__} has no problems to pose")
        self.problems: Sequence[Problem] = problems
        self.max_turns = max_turns
        self.stop_on_correct = stop_on_correct
        self.history_window = history_window
        self.prompt_template = prompt_template
        self.retry_prompt = retry_prompt
        self.system_prompt = system_prompt
        self.shuffle = shuffle
        self.render_mode = render_mode
        self.observation_space = ChatSpace(max_messages=2 * max_turns + 2)
        self.action_space = FreeText()
        self._order = np.arange(len(problems))
        self._cursor = 0
        self._problem: Problem | None = None
        self._opening: Conversation = []
        self._attempts: list[tuple[Message, Message]] = []
        self._turn = 0
        self._done = False

    # ---- what subclasses provide -------------------------------------------------------

    @abstractmethod
    def load_problems(self) -> Sequence[Problem]:
        """Return the problems of the configured data set and split."""

    @abstractmethod
    def grade(self, response: str, problem: Problem | None = None) -> Grade:
        """Grade ``response`` against ``problem`` (the current one by default)."""

    # ---- the Gymnasium API -----------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Conversation, dict[str, Any]]:
        """Start an episode on a problem.

        Args:
            seed: Reseeds the environment; with ``shuffle=True`` it also draws a new
                problem order and restarts it.
            options: ``{"index": i}`` poses ``self.problems[i]``; ``{"problem_id": s}``
                poses the problem with that id. Without either, the next problem in
                the current order is posed.

        Returns:
            The opening conversation and an info dict with ``problem_id``, ``index``,
            ``turn`` (0) and ``reference``.
        """
        super().reset(seed=seed)
        if seed is not None:
            self._cursor = 0
            if self.shuffle:
                self._order = self.np_random.permutation(len(self.problems))
        index = self._select_index(options or {})
        problem = self.problems[index]
        self._problem = problem
        self._opening = []
        if self.system_prompt:
            self._opening.append({"role": "system", "content": self.system_prompt})
        question = self.prompt_template.format(question=problem.question)
        self._opening.append({"role": "user", "content": question})
        self._attempts = []
        self._turn = 0
        self._done = False
        info = {"problem_id": problem.id, "index": index, "turn": 0, "reference": problem.answer}
        return self._observation(), info

    def step(self, action: str) -> tuple[Conversation, float, bool, bool, dict[str, Any]]:
        """Submit one attempt and grade it.

        Args:
            action: The model's whole response (any string; empty is a wrong answer).

        Returns:
            ``(observation, reward, terminated, truncated, info)``; info holds
            ``problem_id``, ``turn`` (1-based), ``answer`` (extracted), ``correct``,
            ``reference``, ``feedback`` and ``gradable``.
        """
        if self._problem is None:
            raise EpisodeNotStarted("step() was called before reset(); call env.reset() first")
        if self._done:
            raise EpisodeFinished(
                "step() was called after the episode ended; call env.reset() to start a new one"
            )
        if not isinstance(action, str):
            raise TypeError(
                f"the action must be the model's response as a str, got {type(action).__name__}"
            )
        grade = self.grade(action, self._problem)
        self._turn += 1
        reward = 1.0 if grade.correct else 0.0
        terminated = self.stop_on_correct and grade.correct
        truncated = not terminated and self._turn >= self.max_turns
        self._done = terminated or truncated
        retry = self._retry_message(grade.feedback)
        self._attempts.append(({"role": "assistant", "content": action}, retry))
        observation = self._observation(final=self._done)
        info = {
            "problem_id": self._problem.id,
            "turn": self._turn,
            "answer": grade.answer,
            "correct": grade.correct,
            "reference": self._problem.answer,
            "feedback": grade.feedback,
            "gradable": grade.gradable,
        }
        return observation, reward, terminated, truncated, info

    def render(self) -> str | None:
        """Return the conversation so far as text when ``render_mode="ansi"``."""
        if self.render_mode != "ansi":
            return None
        return "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in self._observation())

    # ---- public helpers --------------------------------------------------------------

    @property
    def problem(self) -> Problem:
        """The problem of the current episode."""
        if self._problem is None:
            raise EpisodeNotStarted("no problem is posed yet; call env.reset() first")
        return self._problem

    @property
    def turn(self) -> int:
        """How many attempts the current episode has had."""
        return self._turn

    # ---- internals -------------------------------------------------------------------

    def _select_index(self, options: dict[str, Any]) -> int:
        if not isinstance(options, dict):
            raise TypeError(f"reset options must be a dict or None, got {type(options).__name__}")
        unknown = set(options) - {"index", "problem_id"}
        if unknown:
            raise ValueError(
                f"unknown reset option(s) {sorted(unknown, key=str)}; valid: 'index', 'problem_id'"
            )
        if "index" in options:
            index = options["index"]
            if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
                raise TypeError(
                    f"options['index'] must be an int, got {type(index).__name__} {index!r}; "
                    f"valid: 0..{len(self.problems) - 1}"
                )
            if not 0 <= index < len(self.problems):
                raise IndexError(
                    f"options['index']={index!r} is out of range; "
                    f"valid: 0..{len(self.problems) - 1}"
                )
            return int(index)
        if "problem_id" in options:
            if not isinstance(options["problem_id"], str):
                kind = type(options["problem_id"]).__name__
                raise TypeError(f"options['problem_id'] must be a str, got {kind}")
            for index, problem in enumerate(self.problems):
                if problem.id == options["problem_id"]:
                    return index
            raise KeyError(f"no problem with id {options['problem_id']!r} in this environment")
        index = int(self._order[self._cursor % len(self._order)])
        self._cursor += 1
        return index

    def _retry_message(self, feedback: str) -> Message:
        question = self.problem.question
        if "feedback" in self._retry_fields:
            content = self.retry_prompt.format(question=question, feedback=feedback)
        else:
            content = self.retry_prompt.format(question=question)
            if feedback:
                content = f"{feedback}\n\n{content}"
        return {"role": "user", "content": content}

    def _observation(self, final: bool = False) -> Conversation:
        attempts = self._attempts
        if self.history_window is not None and attempts:
            attempts = attempts[-(self.history_window + 1) :]
        messages = copy_conversation(self._opening)
        for position, (answer, retry) in enumerate(attempts):
            messages.append(dict(answer))
            if not (final and position == len(attempts) - 1):
                messages.append(dict(retry))
        return messages


def check_int(name: str, value: object, *, minimum: int, optional: bool = False) -> None:
    """Raise unless ``value`` is an integer (not a bool) >= ``minimum``, or None if optional.

    Raises:
        TypeError: ``value`` is not an integer (``2.5``, ``"3"``, ``True``).
        ValueError: ``value`` is below ``minimum``.
    """
    if value is None and optional:
        return
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        allowed = "an int" + (" or None" if optional else "")
        raise TypeError(f"{name} must be {allowed}, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def check_bool(name: str, value: object) -> None:
    """Raise `TypeError` unless ``value`` is True or False."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")


def check_choice(name: str, value: object, choices: Sequence[str]) -> None:
    """Raise `ValueError` unless ``value`` is one of the strings in ``choices``.

    Example:
        >>> check_choice("feedback", "verbose", ("none", "answer"))
        Traceback (most recent call last):
        ...
        ValueError: feedback must be one of ('none', 'answer'), got 'verbose'
    """
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")


def check_template(name: str, template: object, placeholders: Sequence[str]) -> list[str]:
    """Check a prompt template's placeholders and return those it uses.

    Raises:
        TypeError: ``template`` is not a str.
        ValueError: It has a placeholder not in ``placeholders``, or is not a valid
            `str.format` template (e.g. a lone ``{``).
    """
    if not isinstance(template, str):
        raise TypeError(f"{name} must be a str, got {type(template).__name__}")
    valid = ", ".join(f"{{{p}}}" for p in placeholders)
    fix = f"valid placeholders: {valid}; write a literal brace as {{{{ or }}}}"
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as error:
        raise ValueError(f"{name} is not a valid template ({error}); {fix}") from error
    fields = [field for _, field, _, _ in parsed if field is not None]
    unknown = sorted({f"{{{field}}}" for field in fields if field not in placeholders})
    if unknown:
        raise ValueError(f"{name} has unknown placeholder(s) {', '.join(unknown)}; {fix}")
    try:  # what parsing lets through, e.g. a nested field in a format spec
        template.format(**dict.fromkeys(placeholders, ""))
    except (ValueError, IndexError, KeyError) as error:
        raise ValueError(f"{name} is not a valid template ({error!r}); {fix}") from error
    return fields
