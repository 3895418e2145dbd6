"""Exact decimal amounts (money, prices, limits) from JSON input."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from .errors import ValidationError

MONEY_MAX_SCALE = 9


def parse_amount(field: str, value: Any, *, required: bool = True) -> Decimal | None:
    """A finite decimal >= 0 from a JSON number or decimal string, else ValidationError."""
    if value is None:
        if required:
            raise ValidationError(field, "is required", "missing_field")
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        raise ValidationError(field, "must be a number or a decimal string", "invalid_type")
    try:
        amount = Decimal(repr(value) if isinstance(value, float) else value)
    except (InvalidOperation, ValueError):
        raise ValidationError(field, f"{value!r} is not a decimal number", "invalid_amount")
    if not amount.is_finite() or amount < 0:
        raise ValidationError(field, "must be a finite number >= 0", "invalid_amount")
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -MONEY_MAX_SCALE and amount != round(amount, MONEY_MAX_SCALE):
        raise ValidationError(field, f"at most {MONEY_MAX_SCALE} fractional digits", "invalid_amount")
    return amount + 0
