"""Exact .NET numeric types for both wire formats, with the work bounded before conversion.

Dataverse writes Int32, Int64, Decimal (Money) and Double values. Python's ``int()`` and
``Decimal`` take any literal, and a 4,301-digit integer or ``1e3000000`` costs seconds of CPU
(holding the GIL) or cannot be read back later, so every literal is checked by length and
exponent first and converted only when it can be one of those types.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Annotated

from pydantic import Field, Strict

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
#: System.Decimal: 96-bit mantissa, at most 29 significant digits.
DECIMAL_MAX = Decimal(2**96 - 1)
DECIMAL_DIGITS = 29
#: System.Double: finite values only; .NET writes at most 17 significant digits ("R").
DOUBLE_MAX = Decimal("1.7976931348623157E+308")
DOUBLE_DIGITS = 17
#: No literal of a .NET number is longer than this (a decimal's 29 digits, sign, point, and a
#: double's exponent); longer ones are refused before any conversion.
MAX_LITERAL = 64

Int32 = Annotated[int, Strict(), Field(ge=INT32_MIN, le=INT32_MAX)]
Int64 = Annotated[int, Strict(), Field(ge=INT64_MIN, le=INT64_MAX)]

_XML_INTEGER = re.compile(r"[+-]?[0-9]{1,30}", re.ASCII)
_XML_DECIMAL = re.compile(r"[+-]?(?:[0-9]{1,40}(?:\.[0-9]{0,40})?|\.[0-9]{1,40})", re.ASCII)
_XML_DOUBLE = re.compile(
    r"[+-]?(?:[0-9]{1,40}(?:\.[0-9]{0,40})?|\.[0-9]{1,40})(?:[eE][+-]?[0-9]{1,4})?", re.ASCII
)
_XML_WHITESPACE = " \t\r\n"


@dataclass(frozen=True, slots=True)
class OutOfRange:
    """A JSON number literal that no .NET numeric type holds; refused where it is used."""

    literal: str

    def __str__(self) -> str:
        shown = self.literal if len(self.literal) <= 40 else self.literal[:37] + "..."
        return f"{shown} ({len(self.literal):,} characters)"


class NumberError(ValueError):
    """Raised when a value is not a number of the .NET type its slot holds."""


def _beyond_double(value: Decimal) -> bool:
    """True when a non-zero value's exponent is outside what a double can hold (with room
    for subnormals): such a literal is refused before anything is computed with it."""
    return bool(value) and not -400 <= value.adjusted() <= 308


def parse_json_int(literal: str) -> int | OutOfRange:
    """``json.loads`` hook for integer literals (ASCII digits by JSON's grammar)."""
    if len(literal) > DECIMAL_DIGITS + 1:
        return OutOfRange(literal)
    return int(literal)


def parse_json_float(literal: str) -> Decimal | OutOfRange:
    """``json.loads`` hook for literals with a fraction or an exponent, kept exact."""
    if len(literal) > MAX_LITERAL:
        return OutOfRange(literal)
    value = Decimal(literal)
    if _beyond_double(value):
        return OutOfRange(literal)
    return value


def _significant_digits(value: Decimal) -> int:
    """Digits of the mantissa as written (System.Decimal keeps trailing zeros as scale)."""
    digits = value.as_tuple().digits
    return len(str(int("".join(map(str, digits)) or "0")))


def check_number(value: int | Decimal) -> int | Decimal:
    """An untyped number (an attribute or parameter value): it must fit Int64, Decimal or a
    finite Double, since the column type is not on the wire."""
    if isinstance(value, int):
        if abs(value) > DECIMAL_MAX:
            raise NumberError(f"integer {value} is outside Int64 and Decimal")
        return value
    digits = _significant_digits(value)
    if value.copy_abs() <= DECIMAL_MAX and digits <= DECIMAL_DIGITS:
        return value
    if value.copy_abs() <= DOUBLE_MAX and digits <= DOUBLE_DIGITS:
        return value
    raise NumberError(f"number {value} is not a .NET Decimal or a finite Double")


def check_decimal(value: Decimal) -> Decimal:
    """A System.Decimal (Money): at most 29 significant digits, |x| <= 2**96 - 1."""
    if not value.is_finite() or value.copy_abs() > DECIMAL_MAX:
        raise NumberError(f"{value} is outside System.Decimal's range")
    if _significant_digits(value) > DECIMAL_DIGITS:
        raise NumberError(f"{value} has more than {DECIMAL_DIGITS} significant digits")
    return value


def xml_integer(text: str, low: int = INT64_MIN, high: int = INT64_MAX) -> int:
    """``xs:int``/``xs:long`` text as XmlConvert reads it: ASCII digits, optional sign."""
    stripped = text.strip(_XML_WHITESPACE)
    if not _XML_INTEGER.fullmatch(stripped):
        raise NumberError(f"not an integer: {text[:40]!r}")
    value = int(stripped)
    if not low <= value <= high:
        raise NumberError(f"{stripped} is outside {low}..{high}")
    return value


def xml_decimal(text: str) -> Decimal:
    """``xs:decimal`` text: ASCII digits and a point, no exponent, within System.Decimal."""
    stripped = text.strip(_XML_WHITESPACE)
    if not _XML_DECIMAL.fullmatch(stripped):
        raise NumberError(f"not an xs:decimal: {text[:40]!r}")
    return check_decimal(Decimal(stripped))


def xml_double(text: str) -> Decimal:
    """``xs:double`` text: finite only (INF and NaN are refused), kept exact as Decimal."""
    stripped = text.strip(_XML_WHITESPACE)
    if not _XML_DOUBLE.fullmatch(stripped):
        raise NumberError(f"not a finite xs:double: {text[:40]!r}")
    try:
        value = Decimal(stripped)
    except InvalidOperation as exc:  # pragma: no cover - the pattern admits only numbers
        raise NumberError(f"not an xs:double: {text[:40]!r}") from exc
    if _beyond_double(value) or value.copy_abs() > DOUBLE_MAX:
        raise NumberError(f"{stripped} is outside System.Double's range")
    return value
