"""Which partition a tenant's events go to: Kafka's default partitioner (murmur2 of the key), as every
standard producer computes it with key = tenant_id."""

from __future__ import annotations


def partition_of(tenant_id: str, partition_count: int) -> int:
    from kafka.partitioner.default import murmur2  # kafka-python loads only where Kafka is used

    hashed: int = murmur2(tenant_id.encode("utf-8"))  # kafka-python is untyped; murmur2 returns an int
    return (hashed & 0x7FFFFFFF) % partition_count
