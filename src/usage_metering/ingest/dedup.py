"""Which (tenant_id, event_id) keys are stored: exact over all history, at a bounded cost per batch.

`events` has no primary key (an index over every key ever stored lives in
memory and is rewritten by each commit). The writer asks this index instead:

- **recent keys**, exactly, in a set: every event committed since the last
  flush (at most `recent_limit`, about 140 bytes each). A retry or a Kafka
  replay is almost always one of these.
- **runs**: immutable, sorted arrays of 64-bit key fingerprints with the rowid
  of each event (store/events.py), in files beside the store, memory-mapped
  (about 18 bytes per stored event on disk; the pages are the kernel's cache,
  not this process's heap). Each run has a presence filter (2 bytes per key):
  a new key skips a run's binary search unless its filter bit is set (~6%).
  When the recent set is full, the committed rows it covers become a new run;
  runs of similar size merge in the background, up to `max_run_keys`, so a
  batch searches a few dozen runs at most.
- A fingerprint found in a run is **confirmed** by reading that rowid's key
  from the store, so a fingerprint collision never drops an event. This costs a
  point query per batch that resends an old key; the rare, documented worst case.

The runs are derived from committed rows only (the rows from `covered_rows` on
are read back into the recent set at start), so they never claim an event that
a rolled-back or crashed commit did not store. If the directory is missing or
does not match the store (a copied or restored file), it is rebuilt from the
store's fingerprint column.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict, cast

import duckdb
import numpy as np
import numpy.typing as npt

from usage_metering.store.events import (
    EventKey,
    fingerprint_at_row,
    fingerprints_in_rows,
    keys_at_rows,
    keys_from_row,
    stored_event_rows,
)

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT_VERSION = 2  # 2: each run has a presence filter
FILTER_BITS_PER_KEY = 16  # a new key passes a run's filter with ~6% probability
DEFAULT_RECENT_LIMIT = 200_000
DEFAULT_MAX_RUN_KEYS = 4_000_000  # 64 MB of files; a merge holds about three times that in memory


def index_directory(store_path: Path) -> Path:
    """Where a store's key runs live: `<file>.keys/` beside it."""
    return Path(f"{store_path}.keys")


@dataclass(frozen=True)
class KeyRun:
    """Rows first_row <= rowid < end_row of `events`, as fingerprints sorted ascending, with their rowids."""

    first_row: int
    end_row: int
    fingerprints: np.ndarray  # uint64, sorted
    rows: np.ndarray  # int64, rows[i] holds fingerprints[i]
    filter: np.ndarray | None = None  # presence_filter(fingerprints), for runs saved as files

    @property
    def keys(self) -> int:
        return len(self.fingerprints)

    @property
    def name(self) -> str:
        return f"run-{self.first_row:012d}-{self.end_row:012d}"

    def candidate_rows(self, fingerprints: np.ndarray) -> list[int]:
        """Rowids whose fingerprint is one of `fingerprints` (pass them sorted: the search then walks the
        run's pages in order, not at random)."""
        if self.filter is not None:
            fingerprints = fingerprints[may_contain(self.filter, fingerprints)]
        low = np.searchsorted(self.fingerprints, fingerprints, side="left")
        at = np.minimum(low, self.keys - 1)
        rows: list[int] = []
        for index in np.nonzero(self.fingerprints[at] == fingerprints)[0]:
            position = int(low[index])
            while position < self.keys and self.fingerprints[position] == fingerprints[index]:
                rows.append(int(self.rows[position]))
                position += 1
        return rows


def _filter_slots(filter_bytes: int, fingerprints: np.ndarray) -> npt.NDArray[np.int64]:
    slot_bits = (filter_bytes * 8).bit_length() - 1
    slots: npt.NDArray[np.int64] = (np.asarray(fingerprints) >> np.uint64(64 - slot_bits)).astype(np.int64)
    return slots  # (numpy's stubs type `>>` of arrays as Any)


def presence_filter(fingerprints: np.ndarray) -> np.ndarray:
    """A bitmap of a power of two >= FILTER_BITS_PER_KEY bits per key, with the bit each key's top bits name.

    A key whose bit is clear is not in the run, so a new key skips the run's binary search (and its
    pages) unless its bit is set by chance. Fingerprints are uniform, so their top bits need no hash.
    """
    slot_bits = max(13, int(len(fingerprints) * FILTER_BITS_PER_KEY - 1).bit_length())
    bitmap = np.zeros(1 << (slot_bits - 3), dtype=np.uint8)
    slots = _filter_slots(len(bitmap), fingerprints)
    np.bitwise_or.at(bitmap, slots >> 3, (1 << (slots & 7)).astype(np.uint8))
    return bitmap


def may_contain(bitmap: np.ndarray, fingerprints: np.ndarray) -> npt.NDArray[np.bool_]:
    """A mask: False where a fingerprint is certainly not in the run the bitmap was built from."""
    slots = _filter_slots(len(bitmap), fingerprints)
    mask: npt.NDArray[np.bool_] = ((bitmap[slots >> 3] >> (slots & 7).astype(np.uint8)) & 1).astype(bool)
    return mask  # (numpy's stubs type `>>` of arrays as Any)


def sorted_run(first_row: int, end_row: int, rows: np.ndarray, fingerprints: np.ndarray) -> KeyRun:
    order = np.argsort(fingerprints)
    return KeyRun(first_row, end_row, fingerprints[order], rows[order])


def merge_runs(older: KeyRun, newer: KeyRun) -> KeyRun:
    """Two adjacent runs as one, in linear passes (each input is sorted)."""
    assert older.end_row == newer.first_row
    total = older.keys + newer.keys
    newer_at = np.searchsorted(older.fingerprints, newer.fingerprints, side="right") + np.arange(newer.keys)
    from_newer = np.zeros(total, dtype=bool)
    from_newer[newer_at] = True
    fingerprints = np.empty(total, dtype=np.uint64)
    rows = np.empty(total, dtype=np.int64)
    fingerprints[newer_at], rows[newer_at] = newer.fingerprints, newer.rows
    fingerprints[~from_newer], rows[~from_newer] = older.fingerprints, older.rows
    return KeyRun(older.first_row, newer.end_row, fingerprints, rows)


_SUFFIXES = ("fp", "row", "filter")


class _ManifestRun(TypedDict):
    name: str
    first_row: int
    end_row: int


class Manifest(TypedDict):
    """manifest.json: the live runs, and the store rows they cover."""

    format: int
    covered_rows: int
    last_fingerprint: int | None  # of row covered_rows - 1
    runs: list[_ManifestRun]


class RunFiles:
    """A directory of runs: `<name>.fp.npy`, `<name>.row.npy` and `<name>.filter.npy` each, and a manifest
    naming the live ones."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def read_manifest(self) -> Manifest | None:
        try:
            manifest: object = json.loads((self.directory / MANIFEST).read_text())
        except (OSError, ValueError):
            return None
        # A manifest of this format is one save_manifest wrote.
        return (
            cast(Manifest, manifest)
            if isinstance(manifest, dict) and manifest.get("format") == FORMAT_VERSION
            else None
        )

    def load(self, manifest: Manifest) -> list[KeyRun]:
        return [
            KeyRun(entry["first_row"], entry["end_row"], *self._mapped(entry["name"])) for entry in manifest["runs"]
        ]

    def write(self, run: KeyRun) -> KeyRun:
        """Save a run's arrays (fsynced) and return it backed by the files."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for suffix, array in (
            ("fp", run.fingerprints),
            ("row", run.rows),
            ("filter", presence_filter(run.fingerprints)),
        ):
            path = self.directory / f"{run.name}.{suffix}.npy"
            with open(path, "wb") as file:
                np.save(file, array)
                file.flush()
                os.fsync(file.fileno())
        return KeyRun(run.first_row, run.end_row, *self._mapped(run.name))

    def _mapped(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return tuple(np.load(self.directory / f"{name}.{suffix}.npy", mmap_mode="r") for suffix in _SUFFIXES)

    def save_manifest(self, runs: Sequence[KeyRun], covered_rows: int, last_fingerprint: int | None) -> None:
        """Atomically name the live runs."""
        manifest: Manifest = {
            "format": FORMAT_VERSION,
            "covered_rows": covered_rows,
            "last_fingerprint": last_fingerprint,
            "runs": [{"name": r.name, "first_row": r.first_row, "end_row": r.end_row} for r in runs],
        }
        temporary = self.directory / f"{MANIFEST}.tmp"
        with open(temporary, "w") as file:
            json.dump(manifest, file)
            file.flush()
            os.fsync(file.fileno())
        temporary.replace(self.directory / MANIFEST)

    def remove(self, runs: Iterable[KeyRun]) -> None:
        """Delete runs the manifest no longer names (a search still holding their mapping keeps working)."""
        for run in runs:
            for suffix in _SUFFIXES:
                (self.directory / f"{run.name}.{suffix}.npy").unlink(missing_ok=True)

    def remove_unlisted(self, runs: Iterable[KeyRun]) -> None:
        """Delete run files the manifest does not name: a flush or merge cut short by a crash."""
        live = {run.name for run in runs}
        for path in self.directory.glob("run-*.npy"):
            if path.name.split(".")[0] not in live:
                path.unlink(missing_ok=True)

    def clear(self) -> None:
        for path in self.directory.glob("*"):
            path.unlink(missing_ok=True)


class EventKeyIndex:
    """The keys of `events`, for the single writer; `merge_in_background` runs on a thread of its own."""

    def __init__(
        self,
        directory: Path,
        *,
        recent_limit: int = DEFAULT_RECENT_LIMIT,
        max_run_keys: int = DEFAULT_MAX_RUN_KEYS,
    ) -> None:
        self.files = RunFiles(directory)
        self.recent_limit = recent_limit
        self.max_run_keys = max_run_keys
        self.loaded = False
        self._recent: set[EventKey] = set()
        self._runs: tuple[KeyRun, ...] = ()
        self._covered_rows = 0
        self._last_fingerprint: int | None = None  # of row covered_rows - 1: the manifest's check against the store
        self._lock = threading.Lock()  # guards _runs and the manifest between the writer and a merge
        self._merging: threading.Thread | None = None

    # -- open --------------------------------------------------------------------

    def load(self, cursor: duckdb.DuckDBPyConnection) -> None:
        """Map the runs that match the store (rebuilding them if none do) and read the rest into memory."""
        self.wait_for_merge()
        stored = stored_event_rows(cursor)
        manifest = self.files.read_manifest()
        if manifest is None or not self._matches(cursor, manifest, stored):
            log.info("rebuilding the event key index in %s from %d stored events", self.files.directory, stored)
            self._rebuild(cursor, stored)
        else:
            self._runs = tuple(self.files.load(manifest))
            self._covered_rows = int(manifest["covered_rows"])
            self._last_fingerprint = manifest["last_fingerprint"]
            self.files.remove_unlisted(self._runs)
        self._recent = set(keys_from_row(cursor, self._covered_rows))
        self.loaded = True

    @staticmethod
    def _matches(cursor: duckdb.DuckDBPyConnection, manifest: Manifest, stored: int) -> bool:
        covered = manifest.get("covered_rows")
        if not isinstance(covered, int) or covered > stored:
            return False
        return covered == 0 or fingerprint_at_row(cursor, covered - 1) == manifest.get("last_fingerprint")

    def _rebuild(self, cursor: duckdb.DuckDBPyConnection, stored: int) -> None:
        self.files.directory.mkdir(parents=True, exist_ok=True)
        self.files.clear()
        runs = []
        covered = stored - stored % self.recent_limit if stored >= self.recent_limit else 0
        for first in range(0, covered, self.max_run_keys):
            end = min(first + self.max_run_keys, covered)
            runs.append(self.files.write(sorted_run(first, end, *fingerprints_in_rows(cursor, first, end))))
        self._publish(tuple(runs), covered, fingerprint_at_row(cursor, covered - 1) if covered else None)

    def _publish(self, runs: tuple[KeyRun, ...], covered: int, last_fingerprint: int | None) -> None:
        self.files.save_manifest(runs, covered, last_fingerprint)
        self._runs, self._covered_rows, self._last_fingerprint = runs, covered, last_fingerprint

    # -- the writer's questions ----------------------------------------------------

    def stored(
        self, cursor: duckdb.DuckDBPyConnection, keys: Sequence[EventKey], fingerprints: Sequence[int]
    ) -> set[EventKey]:
        """Which of `keys` (with their fingerprints, in the same order) are already stored."""
        found = {key for key in keys if key in self._recent}
        runs = self._runs
        if not runs or len(found) == len(keys):
            return found
        unsure = [i for i, key in enumerate(keys) if key not in found]
        wanted = np.sort(np.fromiter((fingerprints[i] for i in unsure), dtype=np.uint64, count=len(unsure)))
        rows = [row for run in runs for row in run.candidate_rows(wanted)]
        if rows:
            found |= keys_at_rows(cursor, rows) & {keys[i] for i in unsure}
        return found

    def add(self, keys: Iterable[EventKey]) -> None:
        """Keys just committed."""
        self._recent.update(keys)

    @property
    def recent_keys(self) -> int:
        return len(self._recent)

    @property
    def runs(self) -> tuple[KeyRun, ...]:
        return self._runs

    def flush_if_full(self, cursor: duckdb.DuckDBPyConnection) -> None:
        """Between batches: turn the committed rows the recent set holds into a run, once it is full."""
        if len(self._recent) < self.recent_limit:
            return
        with self._lock:
            first = self._covered_rows
            end = stored_event_rows(cursor)
            run = self.files.write(sorted_run(first, end, *fingerprints_in_rows(cursor, first, end)))
            self._publish((*self._runs, run), end, fingerprint_at_row(cursor, end - 1))
            self._recent = set()
        self.merge_in_background()

    # -- merging -------------------------------------------------------------------

    def merge_in_background(self) -> None:
        if self._merging is not None and self._merging.is_alive():
            return
        if self._mergeable() is None:
            return
        self._merging = threading.Thread(target=self._merge_all, name="key-run-merge", daemon=True)
        self._merging.start()

    def wait_for_merge(self) -> None:
        if self._merging is not None:
            self._merging.join()
            self._merging = None

    def _mergeable(self) -> int | None:
        """The index i where runs i and i+1 should merge: the newer is at least half the older's size."""
        runs = self._runs
        for index in range(len(runs) - 2, -1, -1):
            older, newer = runs[index], runs[index + 1]
            if older.keys <= 2 * newer.keys and older.keys + newer.keys <= self.max_run_keys:
                return index
        return None

    def _merge_all(self) -> None:
        try:
            while (index := self._mergeable()) is not None:
                older, newer = self._runs[index], self._runs[index + 1]
                merged = self.files.write(merge_runs(older, newer))
                with self._lock:
                    runs = self._runs  # the writer may have appended a run meanwhile; these two are unchanged
                    position = runs.index(older)
                    self._publish(
                        (*runs[:position], merged, *runs[position + 2 :]), self._covered_rows, self._last_fingerprint
                    )
                self.files.remove((older, newer))
        except Exception:
            log.exception("merging event key runs failed; the unmerged runs stay in use")
