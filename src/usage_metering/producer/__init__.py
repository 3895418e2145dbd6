"""The producer SDK services embed to record usage events.

    from usage_metering.producer import UsageProducer

    with UsageProducer("localhost:9092") as producer:
        producer.record("acme", "api_calls", 1, user_id="u-42")

`HttpUsageProducer` has the same interface and sends batches to the service's
HTTP API instead of Kafka.
"""

from .delivery import DeliveryError, RejectedEvent
from .http_transport import HttpStatusError, HttpUsageProducer
from .kafka_transport import UsageProducer

__all__ = ["DeliveryError", "HttpStatusError", "HttpUsageProducer", "RejectedEvent", "UsageProducer"]
