r"""Normalisation of math answers: the canonical form answers are compared and voted by.

See `normalize_answer`; `rise_gym.graders.math` describes the whole grading rule.
"""

from __future__ import annotations

import re
import string
from fractions import Fraction

from rise_gym.graders._numbers import HugeNumber, format_number, parse_number

_LEADING_NUMBER = re.compile(r"[+-]?(?:\d[\d,]*)?\.?\d+(?:/\d+|[eE][+-]?\d+)?")
_UNIT_WORDS = re.compile(r"(?:\s+[A-Za-z][A-Za-z.]*)+(?:\^\{?\d\}?)?\s*")
_PAREN_REMARK = re.compile(r"(?<=\S)\s+\((?=[^()]*(?<![\\A-Za-z])[A-Za-z]{3,})[^()]*\)\s*$")
_CLAUSE_REMARK = re.compile(
    r"[,;:]?\s+(?:since|because|as|which|so|from|given|i\.e\.|that is)\b.*$",
    re.IGNORECASE | re.DOTALL,
)
_TEXT_COMMAND = re.compile(r"\\(?:text|textbf|textrm|mbox|mathrm)\s*\{([^{}]*)\}")
_ASSIGNMENT = re.compile(r"[A-Za-z]\s*=")
_SPACING = re.compile(r"(?<!\\)\\[!,;: ]|\\(?:left|right)(?![A-Za-z])|\^\s*\{?\\circ\}?|°")
_SPACES = re.compile(r"\s+")
_REMOVABLE_SPACE = re.compile(r"(?<![A-Za-z]) | (?![A-Za-z])")


def normalize_answer(answer: str) -> str:
    r"""Canonical form of one answer, so that equal answers compare (and vote) equal.

    Args:
        answer: An extracted answer, e.g. ``"$18.00"`` or ``"x = \dfrac{1}{2}"``.

    Returns:
        ``"18"``, ``"0.5"``, ``"1/3"`` for exact numbers; otherwise the answer with
        delimiters, spacing, units and decorations removed (possibly empty).

    Raises:
        TypeError: ``answer`` is not a str.

    Example:
        >>> normalize_answer("$1,234.50$.")
        '1234.5'
    """
    require_str("answer", answer)
    text = clean(answer)
    number = number_in(text)
    if number is not None:
        return format_number(number)
    text = _PAREN_REMARK.sub("", _TEXT_COMMAND.sub(r"\1", text))
    return _REMOVABLE_SPACE.sub("", _SPACES.sub(" ", text)).strip()


def require_str(name: str, value: object) -> None:
    """Raise a `TypeError` naming the argument ``name`` unless ``value`` is a str."""
    if not isinstance(value, str):
        hint = (
            "; decode bytes first, e.g. value.decode('utf-8')" if isinstance(value, bytes) else ""
        )
        raise TypeError(f"{name} must be a str, got {type(value).__name__}{hint}")


def clean(answer: str) -> str:
    """Strip delimiters, spacing commands, signs of currency and percent, trailing dots."""
    text = _SPACING.sub(" ", answer.replace("\x00", ""))
    text = text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("{,}", ",")
    text = text.replace("\\$", "").replace("$", "").replace("\\%", "").replace("%", "")
    text = text.strip(string.whitespace + "*")
    for opening, closing in (("\\(", "\\)"), ("\\[", "\\]")):
        if text.startswith(opening) and text.endswith(closing):
            text = text[2:-2].strip()
    return text.rstrip(".,;: ").strip()


def number_in(text: str) -> Fraction | HugeNumber | None:
    """The exact number a cleaned answer states, trying the forms normalisation accepts."""
    for candidate in (text, _without_assignment(text), _result_of_equation(text)):
        number = parse_number(_without_units(candidate).replace(" ", ""))
        if number is not None:
            return number
    return None


def _without_units(text: str) -> str:
    """``"18 dollars"``, ``"18 (since 9*2=18)"`` -> ``"18"``: a leading number and words."""
    number = _LEADING_NUMBER.match(text)
    if number is None:
        return text
    rest = _TEXT_COMMAND.sub(r" \1", text[number.end() :])
    rest = _PAREN_REMARK.sub("", _CLAUSE_REMARK.sub("", rest))
    words = rest.lower().split()
    if not rest.strip() or (_UNIT_WORDS.fullmatch(rest) and not {"and", "or"} & set(words)):
        return number.group()
    return text


def _without_assignment(text: str) -> str:
    """``"x = 5"`` -> ``"5"``."""
    assignment = _ASSIGNMENT.match(text)
    return text[assignment.end() :].strip() if assignment else text


def _result_of_equation(text: str) -> str:
    """``"5 + 4 = 9"`` -> ``"9"``: the last side of a worked equation (kept if it is a number)."""
    return text.rpartition("=")[2].strip()
