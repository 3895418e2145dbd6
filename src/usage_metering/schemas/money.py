"""Exact decimal amounts (money, prices, limits) from JSON input."""

from __future__ import annotations

import re
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal, DivisionByZero, InvalidOperation, Overflow
from typing import Any

from .errors import ValidationError

MONEY_MAX_SCALE = 9
AMOUNT_MAX_DIGITS = 20  # integer digits: amounts are below 10**20
AMOUNT_MAX = Decimal(10) ** AMOUNT_MAX_DIGITS
DECIMAL_TEXT_PATTERN = r"^[0-9]+(\.[0-9]+)?$"
# Exactly the text `check_amount` takes: below 10**20, at most 9 fractional digits before trailing zeros.
AMOUNT_TEXT_PATTERN = rf"^0*[0-9]{{1,{AMOUNT_MAX_DIGITS}}}(\.[0-9]{{1,{MONEY_MAX_SCALE}}}0*)?$"
_DECIMAL_TEXT_RE = re.compile(DECIMAL_TEXT_PATTERN)
_WIDE = Context(prec=80)  # wide enough that checks on 38-digit values never round
# Additions and multiplications in this context are exact whatever the number of digits (the default
# context keeps only 28 significant digits, and quantities alone may have 29: < 10^20 with 9 fractional
# digits). Money and usage arithmetic never divides.
EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN, traps=[InvalidOperation, DivisionByZero, Overflow])


def exact_decimal(field: str | None, value: Any, code: str) -> Decimal:
    """A Decimal from a JSON number (int, float or Decimal) or plain decimal text like "1.25".

    Text must match DECIMAL_TEXT_PATTERN (the JSON Schema's), so "1e3" or " 1" are refused.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        raise ValidationError(field, "must be a number or a decimal string", "invalid_type")
    if isinstance(value, str) and not _DECIMAL_TEXT_RE.fullmatch(value):  # `$` alone takes a final newline
        raise ValidationError(field, f"{value!r} is not a plain decimal number like 12.5", code)
    try:
        # repr(float) is the shortest text that round-trips, so 0.1 stays 0.1.
        return Decimal(repr(value) if isinstance(value, float) else value)
    except (InvalidOperation, ValueError):
        raise ValidationError(field, f"{value!r} is not a decimal number", code) from None


def check_scale(field: str | None, value: Decimal, max_scale: int, code: str) -> Decimal:
    """Refuse more than `max_scale` significant fractional digits (trailing zeros are fine)."""
    exponent = value.as_tuple().exponent
    if (
        isinstance(exponent, int)
        and exponent < -max_scale
        and value != value.quantize(Decimal(1).scaleb(-max_scale), context=_WIDE)
    ):
        raise ValidationError(field, f"at most {max_scale} fractional digits", code)
    return value


def check_amount(value: Any) -> Decimal:
    """A finite decimal >= 0 and < 10**20 with at most 9 fractional digits, from a JSON number or decimal text.

    The rule of the `Amount` type (schemas/wire.py): prices, fees, quotas, tier bounds.
    """
    amount = exact_decimal(None, value, "invalid_amount")
    if not amount.is_finite() or amount < 0:
        raise ValidationError(None, "must be a finite number >= 0", "invalid_amount")
    if amount >= AMOUNT_MAX:
        raise ValidationError(None, f"must be < {AMOUNT_MAX:f}", "invalid_amount")
    return check_scale(None, amount, MONEY_MAX_SCALE, "invalid_amount")
