"""The checked-in JSON Schema files, generated from the definitions in code.

Regenerate with `python -m usage_metering.schemas.schema_files`; a test fails
when a checked-in file differs from what the code generates.
"""

from __future__ import annotations

import json
from pathlib import Path

from .event import event_json_schema

EVENT_SCHEMA_PATH = Path(__file__).with_name("event.schema.json")


def render_event_schema() -> str:
    return json.dumps(event_json_schema(), indent=2) + "\n"


def write_schema_files() -> list[Path]:
    EVENT_SCHEMA_PATH.write_text(render_event_schema())
    return [EVENT_SCHEMA_PATH]


if __name__ == "__main__":
    for path in write_schema_files():
        print(f"wrote {path}")
