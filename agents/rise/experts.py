r"""Experts that need no second model, for RISE's distillation on a CPU.

RISE's large gains come from distillation: an improved action at every visited state
from a model more capable than the learner. Where no stronger model is at hand, two
oracle-quality experts stand in for it; both are `LLM`s, so they plug in as
``RISEAgent(expert=...)``, ``rise-gym train --improvement expert --expert NAME`` and
the reproduction scripts' ``--expert NAME``:

- `ArithmeticExpert` (``"arithmetic"``) solves RISE-Arithmetic questions with a
  decomposed recomputation (place-value splits, one small step at a time) ending in
  ``\boxed{}``: a better second-pass method for the learner to imitate, not a copy of
  the reference solution.
- `ReferenceExpert` (``"reference"``) answers each problem of an environment with its
  reference solution (GSM8K, MATH, RISE-Arithmetic: any env whose problems carry one).

Results trained with them are distillation from an oracle-quality expert, and reports
label them so.
"""

from __future__ import annotations

import re
from abc import abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

from agents.llm.base import LLM, Completion, Generation, SamplingParams
from rise_gym.envs.base import MultiTurnEnv
from rise_gym.spaces import Conversation

EXPERTS = ("arithmetic", "reference")
"""Names of the built-in experts (`make_expert` also takes any model for `make_llm`)."""


class ScriptedExpert(LLM):
    """An `LLM` that answers each conversation's problem with a fixed text.

    Subclasses implement `answer` for the opening user message (the problem as posed;
    the environment keeps it at the top of every state). Every one of the ``n``
    completions is that answer.
    """

    def generate(
        self,
        conversations: Sequence[Conversation],
        params: SamplingParams,
        *,
        adapter: str | None = None,
    ) -> list[Generation]:
        """Answer every conversation ``params.n`` times; an adapter is refused."""
        if adapter is not None:
            raise ValueError(f"{type(self).__name__} is scripted and takes no adapter")
        generations = []
        for conversation in conversations:
            text = self.answer(_opening_question(conversation))
            completion = Completion(text, num_tokens=len(text.split()))
            generations.append(Generation([completion] * params.n))
        return generations

    @abstractmethod
    def answer(self, opening: str) -> str:
        """The expert's response to the problem posed in ``opening``."""


class ArithmeticExpert(ScriptedExpert):
    r"""Solves every RISE-Arithmetic level by a decomposed recomputation.

    Example:
        >>> print(ArithmeticExpert().answer("What is 47 x 8?"))
        47 x 8 = 40 x 8 + 7 x 8 = 320 + 56 = 376. The answer is \boxed{376}.
    """

    name = "arithmetic-expert"

    def answer(self, opening: str) -> str:
        """The worked recomputation of the arithmetic question in ``opening``.

        Raises:
            ValueError: ``opening`` poses no RISE-Arithmetic question.
        """
        for pattern, solve in _SOLVERS:
            match = pattern.search(opening)
            if match:
                steps, result = solve(match)
                return f"{' '.join(steps)} The answer is \\boxed{{{result}}}."
        raise ValueError(
            "ArithmeticExpert only solves RISE-Arithmetic questions; no arithmetic question "
            f"found in {opening[:200]!r}. Use expert='reference' or an expert model instead."
        )


class ReferenceExpert(ScriptedExpert):
    """Answers each problem of an environment with the problem's reference solution."""

    name = "reference-expert"

    def __init__(self, env: MultiTurnEnv):
        """Index the environment's problems by the opening prompt the env poses.

        Args:
            env: The environment (and split) whose states will be relabelled.

        Raises:
            ValueError: No problem of ``env`` carries a reference solution.
        """
        self.solutions: dict[str, str] = {}
        for index, problem in enumerate(env.problems):
            if problem.solution:
                observation, _ = env.reset(options={"index": index})
                self.solutions[_opening_question(observation)] = problem.solution
        if not self.solutions:
            raise ValueError(
                f"{type(env).__name__} has no reference solutions; use an expert model"
            )

    def answer(self, opening: str) -> str:
        """The reference solution of the problem posed in ``opening``.

        Raises:
            KeyError: ``opening`` is not a problem of the indexed environment.
        """
        try:
            return self.solutions[opening]
        except KeyError:
            raise KeyError(
                "ReferenceExpert has no solution for this problem; build it from the same "
                f"environment and split as the states: {opening[:200]!r}"
            ) from None


def make_expert(
    name: str, env_id: str, env_kwargs: dict[str, Any] | None = None, **llm_options: Any
) -> LLM:
    """The expert called ``name``: a built-in one of `EXPERTS`, or a model for `make_llm`.

    Args:
        name: ``"arithmetic"``, ``"reference"``, or a model id or folder.
        env_id: The environment whose train split is relabelled (for ``"reference"``).
        env_kwargs: Its keyword arguments (``split`` is set to ``"train"``).
        **llm_options: Passed to `make_llm` for a model.
    """
    if name == "arithmetic":
        return ArithmeticExpert()
    if name == "reference":
        import gymnasium as gym

        env = gym.make(env_id, **{**(env_kwargs or {}), "split": "train"}).unwrapped
        assert isinstance(env, MultiTurnEnv)
        return ReferenceExpert(env)
    from agents.llm.factory import make_llm

    return make_llm(name, **llm_options)


def _opening_question(conversation: Conversation) -> str:
    """The first user message: the problem as the environment posed it."""
    for message in conversation:
        if message.get("role") == "user":
            return str(message.get("content", ""))
    raise ValueError("the conversation has no user message posing a problem")


# ---- the worked steps ----------------------------------------------------------------

Steps = tuple[list[str], int]
"""Sentences of worked steps, and the result they reach."""


def _add(a: int, b: int) -> Steps:
    """``a + b`` with ``b >= 0``, by place value (or by counting, for one-digit numbers)."""
    tens, ones = b - b % 10, b % 10
    if b == 0:
        return [f"Adding 0 leaves {a}."], a
    if tens and ones:
        middle = a + tens
        return [f"{a} + {b} = {a} + {tens} + {ones} = {middle} + {ones} = {middle + ones}."], a + b
    if a >= 10 and a % 10 == 0 and not tens:
        return [f"{a} + {b} = {a // 10} tens and {b} ones = {a + b}."], a + b
    if a >= 10:
        a_tens, a_ones = a - a % 10, a % 10
        inner = a_tens + b if tens else a_ones + b
        split = f"({a_tens} + {b}) + {a_ones}" if tens else f"{a_tens} + ({a_ones} + {b})"
        rest = f"{inner} + {a_ones}" if tens else f"{a_tens} + {inner}"
        return [f"{a} + {b} = {split} = {rest} = {a + b}."], a + b
    if 0 <= a < 10 and b < 10:
        counted = ", ".join(str(a + step) for step in range(1, b + 1))
        return [f"Counting {b} up from {a}: {counted}. The sum is {a + b}."], a + b
    return [f"{a} + {b} = {b} + {a} = {a + b}."], a + b


def _subtract(a: int, b: int) -> Steps:
    """``a - b`` with ``b >= 0``: take away the tens of ``b``, then its ones."""
    tens, ones = b - b % 10, b % 10
    if b == 0:
        return [f"Taking away 0 leaves {a}."], a
    if tens and ones:
        middle = a - tens
        return [f"{a} - {b} = {a} - {tens} - {ones} = {middle} - {ones} = {middle - ones}."], a - b
    if a >= 10 and not tens:
        a_tens, a_ones = a - a % 10, a % 10
        return [
            f"{a} - {b} = {a_tens} + ({a_ones} - {b}) = {a_tens} + ({a_ones - b}) = {a - b}."
        ], a - b
    return [f"{a} - {b} = -({b} - {a}) = {a - b}."] if a < b else [
        f"{b} + {a - b} = {a}, so {a} - {b} = {a - b}."
    ], a - b


def _multiply(a: int, b: int) -> Steps:
    """``a x b`` with ``a, b >= 0``: split the larger factor into tens and ones."""
    big, small = (a, b) if a >= b else (b, a)
    tens, ones = big - big % 10, big % 10
    if tens and ones:
        first, second = tens * small, ones * small
        return [
            f"{a} x {b} = {tens} x {small} + {ones} x {small} = {first} + {second} = {a * b}."
        ], a * b
    if tens:  # a round number: work with its tens
        part = big // 10 * small
        return [f"{a} x {b} = {big // 10} x {small} x 10 = {part} x 10 = {a * b}."], a * b
    terms = " + ".join([str(big)] * small) if small else "0"
    return [f"{a} x {b} = {terms} = {a * b}."], a * b


_OPERATIONS: dict[str, Callable[[int, int], Steps]] = {
    "+": _add,
    "-": _subtract,
    "x": _multiply,
}


def _chain(*operands_and_symbols: Any) -> Steps:
    """Left-to-right evaluation of ``a op b [op c]``, each operation worked out."""
    values, symbols = operands_and_symbols[0::2], operands_and_symbols[1::2]
    steps, result = [], values[0]
    for symbol, value in zip(symbols, values[1:]):
        worked, result = _OPERATIONS[symbol](result, value)
        steps += worked
    return steps, result


def _expression(match: re.Match[str]) -> Steps:
    """``What is a op b [op c]?``: the operations from left to right."""
    tokens = re.findall(r"\d+|[+\-x]", match.group(1))
    return _chain(*(token if token in _OPERATIONS else int(token) for token in tokens))


def _boxes_then(match: re.Match[str]) -> Steps:
    """Boxes of items, then some found or given away."""
    boxes, per_box, extra = (int(number) for number in match.group(1, 2, 4))
    steps, total = _multiply(boxes, per_box)
    worked, result = (_add if match.group(3) == "finds" else _subtract)(total, extra)
    return steps + worked, result


def _shared_equally(match: re.Match[str]) -> Steps:
    """Items bought in packs, then shared equally with a remainder kept."""
    start, packs, per_pack, friends, left = (int(number) for number in match.groups())
    steps, bought = _multiply(packs, per_pack)
    worked, total = _add(start, bought)
    shared = total - left
    each = shared // friends
    return steps + worked + [
        f"{total} - {left} = {shared}.",
        f"{shared} / {friends} = {each}, since {each} x {friends} = {each * friends}.",
    ], each


_SOLVERS: list[tuple[re.Pattern[str], Callable[[re.Match[str]], Steps]]] = [
    (
        re.compile(
            r"has (\d+) \w+ and buys (\d+) packs of (\d+) \w+\. \w+ then shares as many "
            r"as possible equally among (\d+) friends, keeping the (\d+) left over"
        ),
        _shared_equally,
    ),
    (
        re.compile(r"has (\d+) boxes with (\d+) \w+ in each box and (finds|gives away) (\d+)"),
        _boxes_then,
    ),
    (re.compile(r"What is (\d+(?: [+\-x] \d+)+)\?"), _expression),
]
"""Each kind of RISE-Arithmetic question, and how to work it out."""
