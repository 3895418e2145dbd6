"""Quick start: `python src/main.py --init-demo` serves the demo on port 8005.

Kept for compatibility; the full command line is `usage-metering serve`.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from usage_metering.cli import main

if __name__ == "__main__":
    main(["serve", *sys.argv[1:]])
