"""Moved to tests/support/kafka_broker.py: the tests import it as `support.kafka_broker`.

bench/ still loads this path by file (importlib's spec_from_file_location), so until it loads
tests/support/kafka_broker.py itself, this file runs that one in its own namespace. Delete it then.
"""

from pathlib import Path as _Path

__file__ = str(_Path(__file__).resolve().parent / "support" / "kafka_broker.py")
exec(compile(_Path(__file__).read_text(), __file__, "exec"))
