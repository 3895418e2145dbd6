"""Ingestion: the ingestor shared by embedded mode and the Kafka consumer group."""

from .ingestor import IngestOutcome, Ingestor, IngestorStopped, QuotaExceeded

__all__ = ["IngestOutcome", "Ingestor", "IngestorStopped", "QuotaExceeded"]
