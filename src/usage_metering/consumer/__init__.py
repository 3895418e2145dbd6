"""Ingestion: the ingestor shared by embedded mode and the Kafka consumer group."""

from .ingestor import BLOCKED, DUPLICATE, RECORDED, IngestOutcome, Ingestor, IngestorStopped, QuotaExceeded

__all__ = ["BLOCKED", "DUPLICATE", "RECORDED", "IngestOutcome", "Ingestor", "IngestorStopped", "QuotaExceeded"]
