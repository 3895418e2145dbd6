"""Ingestion: the ingestor shared by embedded mode and the Kafka consumer group."""

from .ingestor import Ingestor, IngestorStopped, IngestOutcome, QuotaExceeded

__all__ = ["IngestOutcome", "Ingestor", "IngestorStopped", "QuotaExceeded"]
