"""Process-wide settings for a long-running node (`serve`, `consume`), applied once at start-up."""

from __future__ import annotations

import gc

# Allocations between young-generation collections; CPython's default is 700.
YOUNG_GENERATION_THRESHOLD = 10_000


def tune_garbage_collector() -> None:
    """Collect the young generation less often, and leave what exists at start-up out of full collections.

    Ingest allocates several container objects per event (keys, rows, results). At
    the default threshold a 1,000-event request set off dozens of collections,
    each walking the survivors of the ones before. Reference counting still
    frees almost everything at once; only cycles wait for a collection.
    A library does not change this for its host process: only the node does.
    """
    gc.freeze()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, *gc.get_threshold()[1:])
