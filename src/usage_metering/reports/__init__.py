"""Reports: usage summaries, quota status, billing, top users, exports.

Pure functions of the store's data; `reports` may import `store` and `schemas`.
"""

from .pricing import (
    CSV_COLUMNS,
    Invoice,
    LineItem,
    TierCharge,
    build_invoice,
    currency_minor_units,
    invoice_csv_rows,
    price_line_item,
    round_money,
)

__all__ = [
    "CSV_COLUMNS",
    "Invoice",
    "LineItem",
    "TierCharge",
    "build_invoice",
    "currency_minor_units",
    "invoice_csv_rows",
    "price_line_item",
    "round_money",
]
