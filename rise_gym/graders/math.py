r"""Math answer grading: extract the final answer, normalise it, compare with the reference.

Extraction (`extract_answer`) reads the last `MAX_RESPONSE_CHARS` characters of a response
(NUL bytes dropped) and takes the first of these rules that yields an answer:

1. Marked answers: ``\boxed{...}`` or ``\fbox{...}`` (nested braces allowed) and GSM8K
   ``#### answer`` lines. A ``####`` line that reads as a markdown heading
   (``#### Step 3: Final answer``) marks nothing; one with an answer phrase
   (``#### Final answer: 18``) marks the text after the phrase.

   **The last final answer counts**: a later marked answer supersedes an earlier one
   ("\boxed{3} was wrong, so \boxed{4}" answers 4), except one right after a negation
   ("\boxed{4}, not \boxed{3}" answers 4). **Hedging** is several different answers
   offered together as final: the marked answers just before the final one that are
   separated from it only by punctuation and connectives ("\boxed{3} or \boxed{4}",
   "\boxed{3}, \boxed{4}"), or by a short hedge ("maybe", "possibly", "or") that corrects
   nothing, are offered with it and must agree after normalisation. A hedge, or an
   unclosed or empty box among them, leaves the response without an answer (score 0).
2. A phrase: the text after the last "answer is" or "answer:" (any case), up to the end of
   its sentence or line; a ``$...$`` span right after the phrase is taken whole when it
   holds no sentence end (``$12. She spent $5`` answers 12).
3. The last number in the text (``-1,234.5``, ``1.5e3`` style).

An answer longer than `MAX_ANSWER_CHARS` counts as no answer, and so does one that names
two different numbers as alternatives ("3 or 4").

Normalisation (`normalize_answer`, in `rise_gym.graders._normalize`) drops ``$``
delimiters and signs, ``%``, degree marks, LaTeX spacing, ``\left``/``\right``, a
trailing period, units after a number ("18 dollars", ``5\text{ cm}``), a remark after a
number ("18 (since 9*2=18)", "18, because ..."), a leading "x =" before a number and a
worked equation before its numeric result (``5 + 4 = 9``), and turns
``\dfrac``/``\tfrac`` into ``\frac``. An exact number (integer, decimal, ``a/b``,
``\frac{a}{b}``, thousands commas, scientific notation) becomes canonical: ``"18"`` for
``$18.00``, ``"0.5"`` for ``\frac{1}{2}``, ``"1/3"`` for ``\frac{2}{6}``, ``"1500"`` for
``1.5e3`` (see `rise_gym.graders._numbers`).

Comparison (`grade_answer`, `grade_math`): the grader compares exactly the normalised
answer `extract_answer` returns, so that answers that vote together (majority votes group
by this key) grade alike. When both answers are exact numbers they are compared with exact
rational arithmetic and math-verify is never called. Otherwise math-verify decides
symbolic equivalence in a separate process under a hard timeout (see
`rise_gym.graders._symbolic`).

Example:
    >>> grade_math("She pays 9 * 2 = $18.\n#### 18", "18")
    1.0
    >>> extract_answer("So x = \\boxed{\\dfrac{3}{6}}.")
    '0.5'
"""

from __future__ import annotations

import math
import numbers
import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from rise_gym.graders._normalize import clean, normalize_answer, number_in, require_str
from rise_gym.graders._numbers import HugeNumber, parse_number
from rise_gym.graders._symbolic import verifier

__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_ANSWER_CHARS",
    "MAX_RESPONSE_CHARS",
    "MAX_TIMEOUT",
    "extract_answer",
    "grade_answer",
    "grade_math",
    "last_boxed_content",
    "normalize_answer",
]

DEFAULT_TIMEOUT = 5.0
"""Seconds a symbolic comparison may take before it is killed and graded 0."""

MAX_TIMEOUT = 3600.0
"""The largest timeout accepted, in seconds."""

MAX_RESPONSE_CHARS = 200_000
"""Only this many trailing characters of a response are read (bounds the work per call)."""

MAX_ANSWER_CHARS = 1_000
"""Longer final answers are treated as no answer."""

_MAX_HEDGE_CHARS = 100  # a hedge ("or maybe") is short; longer text between answers is work
_BOX = r"\\(?:boxed|fbox)\s*"
_MARKER = re.compile(rf"{_BOX}|#{{4,}}")
_BRACE_OR_ESCAPE = re.compile(r"\\.|[{}]", re.DOTALL)
_ANSWER_PHRASE = re.compile(r"answer\s*(?:is\b(?!['’])\s*:?|:)\s*", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.;](?:\s|$)")
_NUMBER = r"(?:\d+(?:,\d{3})*(?:\.\d+)?|\.\d+)(?:[eE][+-]?\d+)?"
_NUMBER_IN_TEXT = re.compile(rf"(?<![\w.])(?:-(?=[\d.]))?{_NUMBER}")
_WORD = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{2,}")
_HEADING_START = re.compile(r"(\d+[.)]\s+)?[A-Za-z]{2}")  # "Final answer", "2. Check"
_HEADING_WORDS = {"answer", "final", "solution", "step", "summary", "conclusion", "result"}
_CONNECTIVES = {"and", "or", "also", "either"}
_CORRECTION_WORDS = re.compile(
    r"\b(?:wrong|incorrect|mistakes?|errors?|actually|instead|rather|correct(?:ion|ed)|"
    r"oops|wait|however|but|re-?(?:check|do|compute|calculate|consider|vise[ds]?))\b",
    re.IGNORECASE,
)
_HEDGE_WORDS = re.compile(
    r"\b(?:or|either|maybe|perhaps|possibly|alternatively|might|could)\b", re.IGNORECASE
)
_NEGATION_BEFORE = re.compile(r"(?:\bnot|n't|\brather than|\binstead of)[\s$(\\\[]*$", re.I)
_ALTERNATIVES = re.compile(r"\s+or\s+|\s*\\(?:text|mbox)\{\s*or\s*\}\s*", re.IGNORECASE)


def grade_math(response: str, reference: str, *, timeout: float = DEFAULT_TIMEOUT) -> float | None:
    r"""Grade a response's final answer against a reference answer.

    Args:
        response: The model's whole response.
        reference: The reference answer (``"18"``, ``"\frac{1}{2}"``), or a worked
            solution with a ``#### n`` line or a ``\boxed{}`` answer.
        timeout: Seconds a symbolic comparison may run (at most `MAX_TIMEOUT`); past
            it the comparison is killed and graded 0. Also enforced off the main thread
            and inside worker processes.

    Returns:
        1.0 when the final answer equals the reference, 0.0 when it does not (or has no
        answer, hedges, or times out), None when the reference itself cannot be parsed:
        such a problem should be reported and skipped, not counted as wrong.

    Raises:
        TypeError: ``response`` or ``reference`` is not a str, or ``timeout`` not a number.
        ValueError: ``timeout`` is not a positive number of seconds up to `MAX_TIMEOUT`.

    Example:
        >>> grade_math("The answer is 0.5.", "\\frac{1}{2}")
        1.0
    """
    require_str("response", response)
    return grade_answer(extract_answer(response), reference, timeout=timeout)


def grade_answer(
    answer: str | None, reference: str, *, timeout: float = DEFAULT_TIMEOUT
) -> float | None:
    r"""Grade an answer as `extract_answer` returns it (the vote key) against a reference.

    ``grade_math(response, reference)`` is ``grade_answer(extract_answer(response),
    reference)``: callers that need both the key and the grade extract once.

    Args:
        answer: The normalised answer, or None when the response has none.
        reference: As in `grade_math`.
        timeout: As in `grade_math`.

    Returns:
        As `grade_math`.

    Raises:
        TypeError, ValueError: As `grade_math`.

    Example:
        >>> grade_answer("0.5", "\\frac{1}{2}")
        1.0
    """
    if answer is not None:
        require_str("answer", answer)
    require_str("reference", reference)
    timeout = _checked_timeout(timeout)
    gold = _reference_answer(reference)
    gold_key = None if gold is None else normalize_answer(gold)
    if not gold_key:
        return None
    gold_number = parse_number(gold_key)
    if gold_number is not None:
        if answer is None:
            return 0.0
        number = parse_number(answer)
        if number is not None or isinstance(gold_number, HugeNumber):
            return float(number == gold_number)
    correct = verifier().check(gold_key, answer, timeout)
    return None if correct is None else float(correct)


def extract_answer(text: str) -> str | None:
    r"""The normalised final answer of a response: what the grader compares and votes group by.

    Environments report it as ``info["answer"]`` and majority votes group by it.

    Args:
        text: The model's whole response.

    Returns:
        The answer in the canonical form of `normalize_answer`, or None when the
        response has no answer or hedges between different answers.

    Raises:
        TypeError: ``text`` is not a str.

    Example:
        >>> extract_answer("Total: 1,800 dollars.\n#### $1,800.00")
        '1800'
    """
    require_str("text", text)
    answer = _extract_raw(text[-MAX_RESPONSE_CHARS:].replace("\x00", ""))
    if answer is None or _offers_alternatives(answer):
        return None
    return normalize_answer(answer) or None


def last_boxed_content(text: str) -> str | None:
    r"""The contents of the last closed ``\boxed{...}`` (or ``\fbox{...}``) in ``text``."""
    require_str("text", text)
    pairs = _brace_pairs(text)
    boxes = [_braced(text, match.end(), pairs) for match in re.finditer(_BOX, text)]
    return boxes[-1] if boxes and boxes[-1] is not None else None


@dataclass(frozen=True)
class _Marked:
    """One marked answer: where it lies and what it says (None: unclosed or empty box)."""

    start: int
    end: int
    answer: str | None


def _checked_timeout(timeout: object) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real):
        raise TypeError(f"timeout must be a number of seconds, got {type(timeout).__name__}")
    seconds = float(timeout)
    if not (math.isfinite(seconds) and 0 < seconds <= MAX_TIMEOUT):
        raise ValueError(
            f"timeout must be positive seconds, at most {MAX_TIMEOUT:g}, got {timeout!r}"
        )
    return seconds


def _reference_answer(reference: str) -> str | None:
    """The answer inside a reference: marked (#### or boxed) if marked, else all of it."""
    reference = reference[-MAX_RESPONSE_CHARS:].replace("\x00", "")
    if _MARKER.search(reference):
        return _extract_raw(reference)
    reference = reference.strip()
    return reference if 0 < len(reference) <= MAX_ANSWER_CHARS else None


def _extract_raw(text: str) -> str | None:
    """The final answer as written, following the rules of the module docstring.

    Each rule returns None when it does not apply (the next one is tried) and an empty
    string when it applies but finds no usable answer (the response has none).
    """
    for rule in (_final_marked, _after_phrase, _last_number):
        answer = rule(text)
        if answer is not None:
            return answer.strip() if 0 < len(answer.strip()) <= MAX_ANSWER_CHARS else None
    return None


def _final_marked(text: str) -> str | None:
    """The last marked answer, or "" when it is malformed or offered with different ones."""
    marked = _marked_answers(text)
    if not marked:
        return None
    final = len(marked) - 1
    while final > 0 and _NEGATION_BEFORE.search(text[marked[final - 1].end : marked[final].start]):
        final -= 1  # "\boxed{4}, not \boxed{3}": the negated one is no answer
    first = final
    while first > 0 and _offered_together(text[marked[first - 1].end : marked[first].start]):
        first -= 1
    offered = {m.answer for m in marked[first : final + 1]}
    if None in offered or len({normalize_answer(a) for a in offered if a is not None}) > 1:
        return ""
    return marked[final].answer


def _marked_answers(text: str) -> list[_Marked]:
    """Every box and answer-bearing ``####`` line, in order, nested boxes left out."""
    found: list[_Marked] = []
    pairs = _brace_pairs(text)
    for match in _MARKER.finditer(text):
        if found and match.start() < found[-1].end:
            continue
        if match.group().startswith("#"):
            end = text.find("\n", match.end())
            end = len(text) if end < 0 else end
            answer = _hash_line_answer(text[match.end() : end])
            if answer is not None:
                found.append(_Marked(match.start(), end, answer))
            continue
        content = _braced(text, match.end(), pairs)
        if content is None or not content.strip():
            found.append(_Marked(match.start(), match.end(), None))
        else:
            end = match.end() + len(content) + 2
            found.append(_Marked(match.start(), end, _unboxed(content)))
    return found


def _unboxed(content: str) -> str:
    r"""``\boxed{5}`` -> ``5``: the contents of a box that fills a box."""
    stripped = content.strip()
    box = re.match(_BOX, stripped)
    if box is None:
        return content
    inner = _braced(stripped, box.end(), _brace_pairs(stripped))
    if inner is None or box.end() + len(inner) + 2 != len(stripped):
        return content
    return _unboxed(inner)


def _hash_line_answer(line: str) -> str | None:
    """The answer a ``####`` line gives; None for a markdown heading or an empty line."""
    line = line.strip().strip("*").strip()
    phrase = _last(_ANSWER_PHRASE.finditer(line))
    if phrase is not None and line[phrase.end() :].strip():
        return _after_phrase(line)
    words = {word.lower() for word in _WORD.findall(line)}
    start = _HEADING_START.match(line)
    heading = start is not None and (
        start.group(1) or len(words) > 1 or line.endswith(":") or words & _HEADING_WORDS
    )
    return None if heading or not line else line


def _offered_together(between: str) -> bool:
    """Whether two marked answers with ``between`` between them are offered as alternatives."""
    if len(between) > _MAX_HEDGE_CHARS or _CORRECTION_WORDS.search(between):
        return False
    if _HEDGE_WORDS.search(between):
        return True
    words = {word.lower() for word in _WORD.findall(between)}
    return words <= _CONNECTIVES and not any(character.isdigit() for character in between)


def _offers_alternatives(answer: str) -> bool:
    """Whether an answer names different numbers as alternatives ("3 or 4")."""
    parts = _ALTERNATIVES.split(answer)
    if len(parts) < 2:
        return False
    values = [number_in(clean(part)) for part in parts]
    return None not in values and len(set(values)) > 1


def _brace_pairs(text: str) -> dict[int, int]:
    """Position of each ``{`` -> position of its matching ``}`` (escaped braces skipped)."""
    pairs: dict[int, int] = {}
    opened: list[int] = []
    for token in _BRACE_OR_ESCAPE.finditer(text):
        if token.group() == "{":
            opened.append(token.start())
        elif token.group() == "}" and opened:
            pairs[opened.pop()] = token.start()
    return pairs


def _braced(text: str, start: int, pairs: dict[int, int]) -> str | None:
    """The text inside the brace group opening at ``start``; None if unclosed or too long."""
    end = pairs.get(start)
    if end is None or end - start - 1 > MAX_ANSWER_CHARS:
        return None
    return text[start + 1 : end]


def _after_phrase(text: str) -> str | None:
    phrase = _last(_ANSWER_PHRASE.finditer(text))
    if phrase is None:
        return None
    end = text.find("\n", phrase.end())
    rest = text[phrase.end() : end if end >= 0 else len(text)].strip()
    if rest.startswith("$"):  # a math span is taken whole, decimal points and all
        opening = len(rest) - len(rest.lstrip("$"))
        closing = rest.find("$", opening)
        if closing > 0 and not _SENTENCE_END.search(rest, opening, closing):
            return rest[:closing]
    sentence_end = _SENTENCE_END.search(rest)
    return (rest[: sentence_end.start()] if sentence_end else rest) or None


def _last_number(text: str) -> str | None:
    number = _last(_NUMBER_IN_TEXT.finditer(text))
    return None if number is None else number.group()


def _last(matches: Iterator[re.Match[str]]) -> re.Match[str] | None:
    last = deque(matches, maxlen=1)
    return last[0] if last else None
