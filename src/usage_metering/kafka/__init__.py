"""The Kafka adapter: topics, the consumer-group loop, record decoding and dead-letter publishing.

Nothing here is imported by `usage_metering.kafka` itself, so the package name costs no kafka-python
import; each module loads kafka-python where it is used.
"""
