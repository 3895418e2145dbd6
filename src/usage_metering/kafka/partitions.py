"""Which partition a tenant's events go to: Kafka's default partitioner (murmur2 of the key), as every
standard producer computes it with key = tenant_id."""

from __future__ import annotations


def partition_of(tenant_id: str, partition_count: int) -> int:
    from kafka.partitioner.default import murmur2  # kafka-python loads only where Kafka is used

    return (murmur2(tenant_id.encode("utf-8")) & 0x7FFFFFFF) % partition_count
