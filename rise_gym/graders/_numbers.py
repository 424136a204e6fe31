r"""Exact numbers in answers: parsing (decimal, fraction, scientific) and canonical text.

`parse_number` reads an answer with its spaces removed as an exact `Fraction`:
integers and decimals with optional thousands commas (``"1,234.5"``), ratios
(``"3/4"``), ``\frac{a}{b}`` and mixed numbers (``2\frac{1}{2}``), and scientific notation
(``"1.5e3"``, ``"6.02\times10^{23}"``, ``"10^{-3}"``). An exponent beyond
`MAX_EXPONENT` is not expanded (``1e999999999`` would take gigabytes of digits): such a
number parses to a `HugeNumber`, which equals only the same mantissa and exponent and
never a plain number.

`format_number` writes the canonical text of a parsed number: ``"18"``, ``"0.5"``,
``"1/3"``, ``"1e999999999"``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

MAX_NUMBER_CHARS = 400
"""Longer texts are not read as numbers (keeps every conversion trivial)."""

MAX_EXPONENT = 1_000
"""Powers of ten up to this magnitude are expanded exactly; larger ones stay symbolic."""

_DECIMAL = re.compile(r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?")
_RATIO = re.compile(r"([+-]?\d+)/(\d+)")
_FRAC = re.compile(r"([+-]?)(\d*)\\frac(?:\{([+-]?[\d.]+)\}\{([\d.]+)\}|(\d)(\d))")
_MANTISSA = r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?"
_E_NOTATION = re.compile(rf"({_MANTISSA})[eE]([+-]?\d+)")
_POWER_OF_TEN = re.compile(
    rf"(?:({_MANTISSA})(?:\\times|\\cdot|×|\*))?10\^(?:\{{([+-]?\d+)\}}|(\d))"
)


@dataclass(frozen=True)
class HugeNumber:
    """``mantissa * 10**exponent`` with ``1 <= |mantissa| < 10`` and a huge exponent."""

    mantissa: Fraction
    exponent: int


def parse_number(text: str) -> Fraction | HugeNumber | None:
    r"""The exact value of a plain number written without spaces, else None.

    Example:
        >>> parse_number("1.5e3"), parse_number("\\frac{2}{6}"), parse_number("x")
        (Fraction(1500, 1), Fraction(1, 3), None)
    """
    if not text or len(text) > MAX_NUMBER_CHARS:
        return None
    scientific = _E_NOTATION.fullmatch(text) or _POWER_OF_TEN.fullmatch(text)
    if scientific:
        mantissa, *exponent = scientific.groups()
        return _scaled(Fraction(1) if mantissa is None else _decimal(mantissa), exponent)
    number = _decimal(text)
    if number is not None:
        return number
    ratio = _RATIO.fullmatch(text)
    if ratio and int(ratio.group(2)):
        return Fraction(int(ratio.group(1)), int(ratio.group(2)))
    return _fraction(text)


def format_number(value: Fraction | HugeNumber) -> str:
    """Integers plainly, terminating decimals as decimals, other fractions as ``p/q``.

    Example:
        >>> format_number(Fraction(5, 2)), format_number(Fraction(2, 6))
        ('2.5', '1/3')
    """
    if isinstance(value, HugeNumber):
        return f"{format_number(value.mantissa)}e{value.exponent}"
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


def _decimal(text: str) -> Fraction | None:
    if _DECIMAL.fullmatch(text) and any(character.isdigit() for character in text):
        return Fraction(text.replace(",", ""))
    return None


def _scaled(mantissa: Fraction | None, exponents: list[str | None]) -> Fraction | HugeNumber | None:
    """``mantissa * 10**exponent``, exact when the exponent is small enough."""
    exponent = int(next(e for e in exponents if e is not None))
    if mantissa is None:
        return None
    if mantissa == 0:
        return mantissa
    if abs(exponent) <= MAX_EXPONENT:
        return mantissa * Fraction(10) ** exponent
    while abs(mantissa) >= 10:  # the mantissa has <= MAX_NUMBER_CHARS digits: few steps
        mantissa, exponent = mantissa / 10, exponent + 1
    while abs(mantissa) < 1:
        mantissa, exponent = mantissa * 10, exponent - 1
    return HugeNumber(mantissa, exponent)


def _fraction(text: str) -> Fraction | None:
    r"""``\frac{a}{b}``, ``\frac12`` and mixed numbers (``2\frac{1}{2}``, as MATH writes them)."""
    frac = _FRAC.fullmatch(text)
    if frac is None:
        return None
    sign, whole, numerator, denominator, digit_up, digit_down = frac.groups()
    top, bottom = _decimal(numerator or digit_up), _decimal(denominator or digit_down)
    if top is None or not bottom or (whole and not 0 <= top < bottom):
        return None
    value = int(whole or 0) + top / bottom
    return -value if sign == "-" else value
