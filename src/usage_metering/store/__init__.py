"""DuckDB storage: the only place that writes SQL for events, rollups, plans and tenants."""

from .catalog import Catalog, load_catalog
from .database import DEFAULT_DB_PATH, DEFAULT_MEMORY_LIMIT, Database, StoreLockedError
from .dead_letters import DeadLetter
from .file_format import NewerFileFormatError
from .lake import Lake, LakeError

__all__ = [
    "DEFAULT_DB_PATH",
    "DEFAULT_MEMORY_LIMIT",
    "Catalog",
    "Database",
    "DeadLetter",
    "Lake",
    "LakeError",
    "NewerFileFormatError",
    "StoreLockedError",
    "load_catalog",
]
