"""Moved to tests/support/postgres_server.py: the tests import it as `support.postgres_server`.

bench/ still loads this path by file (importlib's spec_from_file_location), so until it loads
tests/support/postgres_server.py itself, this file runs that one in its own namespace. Delete it then.
"""

from pathlib import Path as _Path

__file__ = str(_Path(__file__).resolve().parent / "support" / "postgres_server.py")
exec(compile(_Path(__file__).read_text(), __file__, "exec"))
