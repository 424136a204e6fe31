r"""Math answer grading: extract the final answer, normalise it, compare with the reference.

Extraction (`extract_answer`): the grader reads the last `MAX_RESPONSE_CHARS` characters of
a response (NUL bytes dropped) and takes the first of these rules that yields an answer:

1. GSM8K: the text after the last ``####``, up to the end of its line.
2. Boxed: the contents of ``\boxed{...}`` or ``\fbox{...}`` (nested braces allowed). A
   response that boxes anything is judged by its boxes alone: every box must be closed and
   non-empty, and all must agree after normalisation. An unclosed box, or several different
   boxed answers (hedging), leave the response without an answer, which scores 0.
3. A phrase: the text after the last "answer is" or "answer:" (any case), up to the end of
   its sentence or line; a ``$...$`` span right after the phrase is taken whole.
4. The last number in the text (``-1,234.5`` style).

An answer longer than `MAX_ANSWER_CHARS` counts as no answer.

Normalisation (`normalize_answer`) drops ``$`` delimiters and signs, ``%``, degree marks,
LaTeX spacing, ``\left``/``\right``, a trailing period, units after a number ("18 dollars",
``5\text{ cm}``), a leading "x =" before a number and a worked equation before its
numeric result (``5 + 4 = 9``), and turns ``\dfrac``/``\tfrac`` into
``\frac``. An exact number (integer, decimal, ``a/b``, ``\frac{a}{b}``, thousands commas)
becomes canonical: ``"18"`` for ``$18.00``, ``"0.5"`` for ``\frac{1}{2}``, ``"1/3"`` for
``\frac{2}{6}``. So answers that are equal numbers vote together.

Comparison (`grade_math`): when both answers are exact numbers they are compared with exact
rational arithmetic and math-verify is never called. Otherwise math-verify decides symbolic
equivalence in a separate process under a hard timeout (see `rise_gym.graders._symbolic`).

Example:
    >>> grade_math("She pays 9 * 2 = $18.\n#### 18", "18")
    1.0
    >>> extract_answer("So x = \\boxed{\\dfrac{3}{6}}.")
    '0.5'
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterator
from fractions import Fraction

from rise_gym.graders._symbolic import verifier

__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_ANSWER_CHARS",
    "MAX_RESPONSE_CHARS",
    "extract_answer",
    "grade_math",
    "last_boxed_content",
    "normalize_answer",
]

DEFAULT_TIMEOUT = 5.0
"""Seconds a symbolic comparison may take before it is killed and graded 0."""

MAX_RESPONSE_CHARS = 200_000
"""Only this many trailing characters of a response are read (bounds the work per call)."""

MAX_ANSWER_CHARS = 1_000
"""Longer final answers are treated as no answer."""

_MAX_NUMBER_CHARS = 400  # keeps the fast path's integer conversions trivial
_BOX = re.compile(r"\\(?:boxed|fbox)\s*")
_BRACE_OR_ESCAPE = re.compile(r"\\.|[{}]", re.DOTALL)
_ANSWER_PHRASE = re.compile(r"answer\s*(?:is\b(?!['’])\s*:?|:)\s*", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.;](?:\s|$)")
_NUMBER_IN_TEXT = re.compile(r"(?<![\w.])(?:-(?=\d))?\d+(?:,\d{3})*(?:\.\d+)?")

_DECIMAL = re.compile(r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?")
_RATIO = re.compile(r"([+-]?\d+)/(\d+)")
_FRAC = re.compile(r"([+-]?)(\d*)\\frac(?:\{([+-]?[\d.]+)\}\{([\d.]+)\}|(\d)(\d))")
_LEADING_NUMBER = re.compile(r"[+-]?(?:\d[\d,]*)?\.?\d+(?:/\d+)?")
_UNIT_WORDS = re.compile(r"(?:\s+[A-Za-z][A-Za-z.]*)+(?:\^\{?\d\}?)?\s*")
_TEXT_COMMAND = re.compile(r"\\(?:text|textbf|textrm|mbox|mathrm)\s*\{([^{}]*)\}")
_ASSIGNMENT = re.compile(r"[A-Za-z]\s*=")
_SPACING = re.compile(r"\\[!,;: ]|\\(?:left|right)(?![A-Za-z])|\^\s*\{?\\circ\}?|°")
_SPACES = re.compile(r"\s+")
_REMOVABLE_SPACE = re.compile(r"(?<![A-Za-z]) | (?![A-Za-z])")


def grade_math(response: str, reference: str, *, timeout: float = DEFAULT_TIMEOUT) -> float | None:
    r"""Grade a response's final answer against a reference answer.

    Args:
        response: The model's whole response.
        reference: The reference answer (``"18"``, ``"\frac{1}{2}"``), or a worked
            solution with a ``#### n`` line or a ``\boxed{}`` answer.
        timeout: Seconds a symbolic comparison may run; past it the comparison is killed
            and graded 0. Also enforced off the main thread and inside worker processes.

    Returns:
        1.0 when the final answer equals the reference, 0.0 when it does not (or has no
        answer, hedges, or times out), None when the reference itself cannot be parsed:
        such a problem should be reported and skipped, not counted as wrong.

    Example:
        >>> grade_math("The answer is 0.5.", "\\frac{1}{2}")
        1.0
    """
    if timeout <= 0:
        raise ValueError(f"timeout must be positive seconds, got {timeout!r}")
    gold = _reference_answer(reference)
    if gold is None:
        return None
    pred = _extract_raw(response)
    gold_number = _exact_number(normalize_answer(gold))
    if gold_number is not None:
        if pred is None:
            return 0.0
        pred_number = _exact_number(normalize_answer(pred))
        if pred_number is not None:
            return float(pred_number == gold_number)
    correct = verifier().check(_clean(gold), None if pred is None else _clean(pred), timeout)
    return None if correct is None else float(correct)


def extract_answer(text: str) -> str | None:
    r"""The normalised final answer of a response, as the grader reads it.

    Environments report it as ``info["answer"]`` and majority votes group by it.

    Args:
        text: The model's whole response.

    Returns:
        The answer in the canonical form of `normalize_answer`, or None when the
        response has no answer or hedges between several boxed answers.

    Example:
        >>> extract_answer("Total: 1,800 dollars.\n#### $1,800.00")
        '1800'
    """
    answer = _extract_raw(text)
    return None if answer is None else normalize_answer(answer) or None


def normalize_answer(answer: str) -> str:
    r"""Canonical form of one answer, so that equal answers compare (and vote) equal.

    Args:
        answer: An extracted answer, e.g. ``"$18.00"`` or ``"x = \dfrac{1}{2}"``.

    Returns:
        ``"18"``, ``"0.5"``, ``"1/3"`` for exact numbers; otherwise the answer with
        delimiters, spacing, units and decorations removed (possibly empty).

    Example:
        >>> normalize_answer("$1,234.50$.")
        '1234.5'
    """
    text = _clean(answer)
    for candidate in (text, _without_assignment(text), _result_of_equation(text)):
        number = _exact_number(_without_units(candidate))
        if number is not None:
            return _format_number(number)
    text = _TEXT_COMMAND.sub(r"\1", text)
    return _REMOVABLE_SPACE.sub("", _SPACES.sub(" ", text)).strip()


def last_boxed_content(text: str) -> str | None:
    r"""The contents of the last closed ``\boxed{...}`` (or ``\fbox{...}``) in ``text``."""
    boxes = _boxed_contents(text)
    return boxes[-1] if boxes and boxes[-1] is not None else None


def _reference_answer(reference: str) -> str | None:
    """The answer inside a reference: marked (#### or boxed) if marked, else all of it."""
    reference = reference.replace("\x00", "")
    if "####" in reference or _BOX.search(reference):
        return _extract_raw(reference)
    reference = reference.strip()
    return reference if 0 < len(reference) <= MAX_ANSWER_CHARS else None


def _extract_raw(text: str) -> str | None:
    """The final answer as written, following the rules of the module docstring.

    Each rule returns None when it does not apply (the next one is tried) and an empty
    string when it applies but finds no usable answer (the response has none).
    """
    text = text[-MAX_RESPONSE_CHARS:].replace("\x00", "")
    for rule in (_after_hashes, _agreed_box, _after_phrase, _last_number):
        answer = rule(text)
        if answer is not None:
            return answer.strip() if 0 < len(answer.strip()) <= MAX_ANSWER_CHARS else None
    return None


def _after_hashes(text: str) -> str | None:
    start = text.rfind("####")
    if start < 0:
        return None
    end = text.find("\n", start)
    return text[start + 4 : end if end >= 0 else len(text)].strip() or None


def _agreed_box(text: str) -> str | None:
    boxes = _boxed_contents(text)
    if not boxes:
        return None
    if any(box is None or not box.strip() for box in boxes):
        return ""  # a malformed box: the response has no answer
    if len({normalize_answer(box) for box in set(boxes) if box}) > 1:
        return ""  # hedging between different answers
    return boxes[-1]


def _boxed_contents(text: str) -> list[str | None]:
    """Contents of every box in order; None for a box that is not closed."""
    return [_braced(text, box.end()) for box in _BOX.finditer(text)]


def _braced(text: str, start: int) -> str | None:
    """The text inside the brace group opening at ``start`` (escaped braces skipped)."""
    if not text.startswith("{", start):
        return None
    depth = 0
    for token in _BRACE_OR_ESCAPE.finditer(text, start, start + MAX_ANSWER_CHARS + 2):
        if token.group() == "{":
            depth += 1
        elif token.group() == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : token.start()]
    return None


def _after_phrase(text: str) -> str | None:
    phrase = _last(_ANSWER_PHRASE.finditer(text))
    if phrase is None:
        return None
    end = text.find("\n", phrase.end())
    rest = text[phrase.end() : end if end >= 0 else len(text)].strip()
    if rest.startswith("$"):  # a math span is taken whole, periods and all
        closing = rest.find("$", len(rest) - len(rest.lstrip("$")))
        if closing > 0:
            return rest[:closing]
    sentence_end = _SENTENCE_END.search(rest)
    return (rest[: sentence_end.start()] if sentence_end else rest) or None


def _last_number(text: str) -> str | None:
    number = _last(_NUMBER_IN_TEXT.finditer(text))
    return None if number is None else number.group()


def _last(matches: Iterator[re.Match[str]]) -> re.Match[str] | None:
    last = deque(matches, maxlen=1)
    return last[0] if last else None


def _clean(answer: str) -> str:
    """Strip delimiters, spacing commands, signs of currency and percent, trailing dots."""
    text = _SPACING.sub(" ", answer.replace("\x00", ""))
    text = text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("{,}", ",")
    text = text.replace("\\$", "").replace("$", "").replace("\\%", "").replace("%", "")
    text = text.strip().strip("*").strip()
    for opening, closing in (("\\(", "\\)"), ("\\[", "\\]")):
        if text.startswith(opening) and text.endswith(closing):
            text = text[2:-2].strip()
    return text.rstrip(".,;: ").strip()


def _without_units(text: str) -> str:
    """``"18 dollars"`` -> ``"18"``: a leading number followed only by words is kept."""
    number = _LEADING_NUMBER.match(text)
    if number is None:
        return text
    rest = _TEXT_COMMAND.sub(r" \1", text[number.end() :])
    words = rest.lower().split()
    if rest and _UNIT_WORDS.fullmatch(rest) and "and" not in words and "or" not in words:
        return number.group()
    return text


def _without_assignment(text: str) -> str:
    """``"x = 5"`` -> ``"5"``."""
    assignment = _ASSIGNMENT.match(text)
    return text[assignment.end() :].strip() if assignment else text


def _result_of_equation(text: str) -> str:
    """``"5 + 4 = 9"`` -> ``"9"``: the last side of a worked equation (kept if it is a number)."""
    return text.rpartition("=")[2].strip()


def _exact_number(text: str) -> Fraction | None:
    r"""The value of a plain number (decimal, ``a/b``, ``\frac{a}{b}``, mixed), else None."""
    text = text.replace(" ", "")
    if not text or len(text) > _MAX_NUMBER_CHARS:
        return None
    if _DECIMAL.fullmatch(text) and any(character.isdigit() for character in text):
        return Fraction(text.replace(",", ""))
    ratio = _RATIO.fullmatch(text)
    if ratio and int(ratio.group(2)):
        return Fraction(int(ratio.group(1)), int(ratio.group(2)))
    frac = _FRAC.fullmatch(text)
    if frac:
        sign, whole, numerator, denominator, digit_up, digit_down = frac.groups()
        top, bottom = _exact_number(numerator or digit_up), _exact_number(denominator or digit_down)
        if top is None or not bottom or (whole and not 0 <= top < bottom):
            return None
        value = int(whole or 0) + top / bottom  # 2\frac{1}{2}: a mixed number, as MATH writes them
        return -value if sign == "-" else value
    return None


def _format_number(value: Fraction) -> str:
    """Integers plainly, terminating decimals as decimals, other fractions as ``p/q``."""
    if value.denominator == 1:
        return str(value.numerator)
    twos = fives = 0
    rest = value.denominator
    while rest % 2 == 0:
        rest, twos = rest // 2, twos + 1
    while rest % 5 == 0:
        rest, fives = rest // 5, fives + 1
    if rest != 1:
        return f"{value.numerator}/{value.denominator}"
    places = max(twos, fives)
    digits = str(abs(value.numerator) * 10**places // value.denominator).rjust(places + 1, "0")
    sign = "-" if value < 0 else ""
    return f"{sign}{digits[:-places]}.{digits[-places:]}"
