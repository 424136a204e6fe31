"""Procedurally generated arithmetic problems with a difficulty knob; no data needed.

Difficulty levels (answers are integers, checked exactly):

=====  ============================================================  =======================
level  problem                                                       example
=====  ============================================================  =======================
1      sum of two one-digit numbers                                  What is 3 + 5?
2      two-digit number plus one-digit number                        What is 47 + 8?
3      sum of two two-digit numbers                                  What is 47 + 38?
4      two-digit and one-digit number with +, - or x                 What is 47 x 8?
5      three two-digit numbers with + and -                          What is 47 + 38 - 19?
6      a two-step word problem (multiply, then add or subtract)      Ana has 12 boxes of 7 ...
7      a three-step word problem with three-digit numbers            ...
=====  ============================================================  =======================

Each split is drawn from its own seeded generator, so ``split="train"`` and
``split="test"`` are reproducible. From level 2 on the splits are disjoint: a hash of the
question puts every possible problem in exactly one split (half each), so a model
trained on ``train`` is tested on problems it never saw. Level 1 has only 100 distinct
problems (every sum of two one-digit numbers) and both splits hold all of them: each run
of 100 problems of either split is the whole level, in that split's own order. Within a
split, problems do not repeat until the split's distinct problems run out (level 2: 450
per split).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any, ClassVar

import numpy as np

from rise_gym.envs.base import MultiTurnEnv, check_int
from rise_gym.envs.math import MATH_PROMPT_TEMPLATE, MathFeedbackKind, MathGraderMixin
from rise_gym.problems import Problem

MAX_DIFFICULTY = 7
SPLITS = ("train", "test")

Generated = tuple[str, int, str]
"""A generated problem: question, integer answer, worked solution."""


class ArithmeticEnv(MathGraderMixin, MultiTurnEnv):
    """Multi-turn arithmetic: seeded, procedural, with a difficulty knob from 1 to 7.

    Example:
        >>> env = ArithmeticEnv(difficulty=1, num_problems=3)
        >>> observation, info = env.reset(seed=0)
        >>> env.problem.question.startswith("What is")
        True
    """

    default_prompt_template: ClassVar[str] = MATH_PROMPT_TEMPLATE
    data_origin = "procedural (seeded generator)"

    def __init__(
        self,
        difficulty: int = 3,
        split: str = "test",
        size: int = 1000,
        data_seed: int = 0,
        feedback: MathFeedbackKind = "none",
        **kwargs: Any,
    ):
        """Create the environment.

        Args:
            difficulty: 1 (one-digit sums) to 7 (three-step word problems); see the
                module docstring.
            split: ``"train"`` or ``"test"``; each split has its own generator.
            size: How many problems the split holds.
            data_seed: Seed of the problem generator (distinct from the reset seed,
                which only orders the problems).
            feedback: What follows an attempt before the retry prompt: ``"none"``,
                ``"answer"`` or ``"format"``, as in `MathEnv`.
            **kwargs: Episode options of `MultiTurnEnv` (max_turns, stop_on_correct,
                history_window, prompt_template, retry_prompt, system_prompt, shuffle,
                num_problems, render_mode).
        """
        check_int("difficulty", difficulty, minimum=1)
        check_int("size", size, minimum=1)
        check_int("data_seed", data_seed, minimum=0)
        if not 1 <= difficulty <= MAX_DIFFICULTY:
            raise ValueError(f"difficulty must be in 1..{MAX_DIFFICULTY}, got {difficulty}")
        if split not in SPLITS:
            raise ValueError(f"arithmetic has no split {split!r}; valid splits: {list(SPLITS)}")
        self.difficulty = difficulty
        self.split = split
        self.size = size
        self.data_seed = data_seed
        super().__init__(feedback=feedback, **kwargs)

    def load_problems(self) -> Sequence[Problem]:
        """Generate the split's problems."""
        return generate_problems(self.difficulty, self.split, self.size, self.data_seed)


@lru_cache(maxsize=64)
def generate_problems(
    difficulty: int, split: str, size: int, data_seed: int = 0
) -> tuple[Problem, ...]:
    """Generate ``size`` problems of a difficulty level, reproducibly.

    Args:
        difficulty: Level 1..7 (see the module docstring).
        split: ``"train"`` or ``"test"``; selects an independent generator.
        size: Number of problems.
        data_seed: Seed of the generator.

    Returns:
        Problems with integer answers and worked solutions.
    """
    rng = np.random.default_rng([data_seed, difficulty, zlib.crc32(split.encode())])
    generate = _LEVELS[difficulty - 1]
    if difficulty > 1:
        generate = _only_in_split(generate, split)
    problems = []
    seen: set[str] = set()
    for index in range(size):
        question, answer, solution = _fresh_draw(generate, rng, seen)
        problems.append(
            Problem(
                id=f"arithmetic/d{difficulty}/{split}/{index}",
                question=question,
                answer=str(answer),
                solution=f"{solution}\nThe answer is \\boxed{{{answer}}}.",
                metadata={"difficulty": difficulty},
            )
        )
    return tuple(problems)


def _only_in_split(
    generate: Callable[[np.random.Generator], Generated], split: str
) -> Callable[[np.random.Generator], Generated]:
    """``generate``, redrawing until the problem belongs to ``split`` (by its question's hash)."""
    wanted = SPLITS.index(split)

    def generate_in_split(rng: np.random.Generator) -> Generated:
        while True:
            drawn = generate(rng)
            if zlib.crc32(drawn[0].encode()) % len(SPLITS) == wanted:
                return drawn

    return generate_in_split


def _fresh_draw(
    generate: Callable[[np.random.Generator], Generated],
    rng: np.random.Generator,
    seen: set[str],
    attempts: int = 2000,
) -> Generated:
    """A problem not in ``seen``; once none turns up in ``attempts`` draws, a new cycle starts.

    At level 1 (100 distinct problems) the chance that a problem still unseen is missed
    by 2000 draws is below 1e-8, so every cycle holds each problem exactly once.
    """
    for _ in range(attempts):
        drawn = generate(rng)
        if drawn[0] not in seen:
            break
    else:
        seen.clear()
    seen.add(drawn[0])
    return drawn


def _number(rng: np.random.Generator, digits: int) -> int:
    low = 0 if digits == 1 else 10 ** (digits - 1)
    return int(rng.integers(low, 10**digits))


def _sum_of(first_digits: int, second_digits: int) -> Callable[[np.random.Generator], Generated]:
    def generate(rng: np.random.Generator) -> Generated:
        a, b = _number(rng, first_digits), _number(rng, second_digits)
        return f"What is {a} + {b}?", a + b, f"{a} + {b} = {a + b}."

    return generate


def _one_operation(rng: np.random.Generator) -> Generated:
    a, b = _number(rng, 2), _number(rng, 1)
    symbol = str(rng.choice(["+", "-", "x"]))
    result = {"+": a + b, "-": a - b, "x": a * b}[symbol]
    return f"What is {a} {symbol} {b}?", result, f"{a} {symbol} {b} = {result}."


def _three_terms(rng: np.random.Generator) -> Generated:
    a, b, c = (_number(rng, 2) for _ in range(3))
    signs = [str(sign) for sign in rng.choice(["+", "-"], size=2)]
    partial = a + b if signs[0] == "+" else a - b
    result = partial + c if signs[1] == "+" else partial - c
    expression = f"{a} {signs[0]} {b} {signs[1]} {c}"
    solution = f"{a} {signs[0]} {b} = {partial}. {partial} {signs[1]} {c} = {result}."
    return f"What is {expression}?", result, solution


_NAMES = ("Ana", "Ben", "Chloe", "Dev", "Emma", "Femi", "Gus", "Hana")
_ITEMS = ("apples", "pencils", "stickers", "marbles", "cards", "cookies")


def _word_problem(rng: np.random.Generator) -> Generated:
    name, item = str(rng.choice(_NAMES)), str(rng.choice(_ITEMS))
    boxes, per_box, extra = _number(rng, 1) + 2, _number(rng, 1) + 2, _number(rng, 2)
    total = boxes * per_box
    if rng.random() < 0.5:
        question = (
            f"{name} has {boxes} boxes with {per_box} {item} in each box and finds {extra} "
            f"more {item}. How many {item} does {name} have now?"
        )
        return (
            question,
            total + extra,
            f"{boxes} x {per_box} = {total}. {total} + {extra} = {total + extra}.",
        )
    extra = min(extra, total)
    question = (
        f"{name} has {boxes} boxes with {per_box} {item} in each box and gives away {extra} "
        f"{item}. How many {item} does {name} have left?"
    )
    return (
        question,
        total - extra,
        f"{boxes} x {per_box} = {total}. {total} - {extra} = {total - extra}.",
    )


def _three_step_problem(rng: np.random.Generator) -> Generated:
    name, item = str(rng.choice(_NAMES)), str(rng.choice(_ITEMS))
    start, boxes, per_box = _number(rng, 3), _number(rng, 1) + 2, _number(rng, 2)
    shares = int(rng.integers(2, 6))
    bought = boxes * per_box
    total = start + bought
    remainder = total % shares
    kept = total - remainder
    each = kept // shares
    question = (
        f"{name} has {start} {item} and buys {boxes} packs of {per_box} {item}. "
        f"{name} then shares as many as possible equally among {shares} friends, keeping "
        f"the {remainder} left over. How many {item} does each friend get?"
    )
    solution = (
        f"{boxes} x {per_box} = {bought}. {start} + {bought} = {total}. "
        f"{total} - {remainder} = {kept}. {kept} / {shares} = {each}."
    )
    return question, each, solution


_LEVELS: tuple[Callable[[np.random.Generator], Generated], ...] = (
    _sum_of(1, 1),
    _sum_of(2, 1),
    _sum_of(2, 2),
    _one_operation,
    _three_terms,
    _word_problem,
    _three_step_problem,
)
