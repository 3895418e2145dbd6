"""The ingest engine every mode shares: decide (dedup, quota), fold rollup deltas, append, counters, compaction."""

from .ingestor import Ingestor, IngestorStopped, IngestOutcome, QuotaExceeded

__all__ = ["IngestOutcome", "Ingestor", "IngestorStopped", "QuotaExceeded"]
