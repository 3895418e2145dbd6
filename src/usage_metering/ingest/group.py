"""A group commit's input: the callers' requests, their events' unique keys in arrival order, and the
outcomes handed back to each caller."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from usage_metering.schemas import EventStatus, UsageEvent
from usage_metering.store import DeadLetter
from usage_metering.store.events import EventKey, event_fingerprint
from usage_metering.store.offsets import PartitionKey

from .decisions import IngestOutcome

# Turns the blocked event at this index of a request into a dead letter (Kafka mode: a
# blocked message must not vanish, and must be recorded in the commit that moves its offset).
BlockedLetter = Callable[[int, IngestOutcome], DeadLetter]


@dataclass
class Request:
    """One caller's submit: events, the source offsets they advance, dead letters to record with them."""

    events: Sequence[UsageEvent]
    offsets: Mapping[PartitionKey, int]
    dead_letters: Sequence[DeadLetter]
    dead_letter_blocked: BlockedLetter | None = None
    future: Future[list[IngestOutcome]] = field(default_factory=Future)
    # Hashed by the submitting thread (an HTTP loop, a Kafka poller) while the writer commits the group before.
    fingerprints: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self.fingerprints = [event_fingerprint(event.tenant_id, event.event_id) for event in self.events]

    def letters_with_blocked(self, outcomes: Sequence[IngestOutcome]) -> list[DeadLetter]:
        """This request's dead letters, plus one per blocked event when the caller asked for them."""
        if self.dead_letter_blocked is None:
            return list(self.dead_letters)
        blocked = self.dead_letter_blocked
        return [*self.dead_letters, *(blocked(i, o) for i, o in enumerate(outcomes) if o.status is EventStatus.BLOCKED)]


@dataclass(frozen=True)
class Group:
    """The requests committed together; `unique` holds each (tenant_id, event_id) once, first arrival first."""

    requests: list[Request]
    events: list[UsageEvent]
    keys: list[EventKey]  # of `unique`, in order
    unique: list[UsageEvent]
    fingerprints: list[int]  # of `unique`

    @classmethod
    def of(cls, requests: list[Request]) -> Group:
        events = [event for request in requests for event in request.events]
        first_index: dict[EventKey, int] = {}  # in order of first appearance
        for index, event in enumerate(events):
            first_index.setdefault((event.tenant_id, event.event_id), index)
        fingerprints = [fingerprint for request in requests for fingerprint in request.fingerprints]
        if len(first_index) == len(events):
            return cls(requests, events, list(first_index), events, fingerprints)
        unique = [events[i] for i in first_index.values()]
        return cls(requests, events, list(first_index), unique, [fingerprints[i] for i in first_index.values()])

    @property
    def direct(self) -> bool:
        """Some request came without source offsets (HTTP, imports)."""
        return any(not request.offsets for request in self.requests)

    def outcomes(self, decisions: list[IngestOutcome]) -> list[list[IngestOutcome]]:
        """One outcome per submitted event, request by request (`decisions` are per unique key); a repeat
        within the group is a duplicate of the first."""
        if len(self.keys) == len(self.events):  # no repeats: the decisions are the outcomes
            results, start = [], 0
            for request in self.requests:
                results.append(decisions[start : start + len(request.events)])
                start += len(request.events)
            return results
        decided = dict(zip(self.keys, decisions))
        seen: set[EventKey] = set()
        results = []
        for request in self.requests:
            request_outcomes = []
            for event in request.events:
                key = (event.tenant_id, event.event_id)
                decision = decided[key]
                if key in seen and decision.status is EventStatus.RECORDED:
                    decision = IngestOutcome(event.event_id, EventStatus.DUPLICATE)
                seen.add(key)
                request_outcomes.append(decision)
            results.append(request_outcomes)
        return results
