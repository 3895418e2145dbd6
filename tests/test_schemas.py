"""Validation rules of the event, plan, tenant and metric formats, and aggregates."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from usage_metering.schemas.event import _parse_quantity_generally, _parse_timestamp_text_generally, parse_quantity, parse_timestamp_value
from usage_metering.schemas import (
    AggregateState,
    Aggregation,
    OveragePolicy,
    ValidationError,
    parse_event,
    parse_metric_definition,
    parse_plan,
    parse_tenant,
    uuid7,
)

pytestmark = pytest.mark.unit

D = Decimal
NOW = datetime(2024, 6, 15, 12, 0, 0, tzinfo=timezone.utc)


def event(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"tenant_id": "acme", "metric": "api_calls", "quantity": 1}
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not ...}


def rejects(data: Any, field: str | None, code: str, **kwargs: Any) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        parse_event(data, now=NOW, **kwargs)
    assert (info.value.field, info.value.code) == (field, code), info.value.as_dict()
    return info.value


# --- required fields and ids ---------------------------------------------------


@pytest.mark.parametrize("field", ["tenant_id", "metric", "quantity"])
def test_missing_required_field(field: str) -> None:
    error = rejects(event(**{field: ...}), field, "missing_field")
    assert error.as_dict() == {"code": "missing_field", "message": "is required", "field": field}


@pytest.mark.parametrize("field", ["tenant_id", "metric", "user_id", "event_id"])
@pytest.mark.parametrize("bad", ["has space", "slash/", "", "é", "semi;colon"])
def test_bad_id_characters(field: str, bad: str) -> None:
    rejects(event(**{field: bad}), field, "invalid_id")


def test_id_must_be_a_string() -> None:
    rejects(event(tenant_id=42), "tenant_id", "invalid_type")


def test_id_length_128_ok_129_rejected() -> None:
    assert parse_event(event(tenant_id="t" * 128), now=NOW).tenant_id == "t" * 128
    rejects(event(tenant_id="t" * 129), "tenant_id", "invalid_id")


def test_id_allows_all_documented_characters() -> None:
    ok = "Az09_.:@-"
    parsed = parse_event(event(tenant_id=ok, metric=ok, user_id=ok, event_id=ok), now=NOW)
    assert (parsed.tenant_id, parsed.metric, parsed.user_id, parsed.event_id) == (ok, ok, ok, ok)


# --- quantity ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [-1, "-0.5", float("nan"), "NaN", float("inf"), "Infinity", "-Infinity", "abc", "1.2.3",
     "0.1234567891", D("1.0000000001"), "1e20"],
)
def test_invalid_quantity(bad: Any) -> None:
    rejects(event(quantity=bad), "quantity", "invalid_quantity")


@pytest.mark.parametrize("bad", [True, False, [1], {"v": 1}])
def test_quantity_of_wrong_type(bad: Any) -> None:
    rejects(event(quantity=bad), "quantity", "invalid_type")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("1.5", "1.5"),
        (0.1, "0.1"),  # a float becomes its shortest repr, not 0.1000000000000000055...
        (7, "7"),
        ("0.123456789", "0.123456789"),  # 9 fractional digits is the limit
        (D("2.5000000000"), "2.5000000000"),  # trailing zeros past 9 digits lose nothing
    ],
)
def test_quantity_is_parsed_exactly(given: Any, expected: str) -> None:
    quantity = parse_event(event(quantity=given), now=NOW).quantity
    assert isinstance(quantity, Decimal)
    assert quantity == D(expected)


def test_quantity_from_json_number_parsed_as_decimal_stays_exact() -> None:
    raw = json.loads('{"tenant_id": "a", "metric": "m", "quantity": 0.1}', parse_float=Decimal)
    quantity = parse_event(raw, now=NOW).quantity
    assert quantity == D("0.1")
    assert str(quantity) == "0.1"
    assert quantity * 3 == D("0.3")


def test_negative_zero_quantity_normalised() -> None:
    quantity = parse_event(event(quantity=Decimal("-0")), now=NOW).quantity
    assert quantity == 0 and not quantity.is_signed()


@pytest.mark.parametrize("text", ["-0", "1e3", " 1.5", "1_000", ".5", "+2"])
def test_quantity_text_must_be_plain_decimal(text: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_event(event(quantity=text), now=NOW)
    assert info.value.field == "quantity" and info.value.code == "invalid_quantity"


# --- timestamp ------------------------------------------------------------------------


def test_timestamp_rfc3339_z() -> None:
    parsed = parse_event(event(timestamp="2024-06-15T10:30:00Z"), now=NOW)
    assert parsed.timestamp == datetime(2024, 6, 15, 10, 30, tzinfo=timezone.utc)
    assert parsed.timestamp.utcoffset() == timedelta(0)


def test_timestamp_with_offset_is_converted_to_utc() -> None:
    parsed = parse_event(event(timestamp="2024-06-15T12:30:00.250+02:00"), now=NOW)
    assert parsed.timestamp == datetime(2024, 6, 15, 10, 30, 0, 250000, tzinfo=timezone.utc)
    assert parsed.timestamp.tzinfo == timezone.utc
    assert parsed.to_json_dict()["timestamp"] == "2024-06-15T10:30:00.250000Z"


def test_naive_timestamp_rejected() -> None:
    rejects(event(timestamp="2024-06-15T10:30:00"), "timestamp", "invalid_timestamp")


@pytest.mark.parametrize("bad", ["yesterday", "2024-13-01T00:00:00Z", ""])
def test_unparseable_timestamp_rejected(bad: str) -> None:
    rejects(event(timestamp=bad), "timestamp", "invalid_timestamp")


@pytest.mark.parametrize("bad", [True, ["2024"], {"t": 1}])
def test_timestamp_wrong_type(bad: Any) -> None:
    rejects(event(timestamp=bad), "timestamp", "invalid_type")


def test_timestamp_epoch_seconds_int_and_fractional() -> None:
    epoch = int(NOW.timestamp()) - 60
    assert parse_event(event(timestamp=epoch), now=NOW).timestamp == NOW - timedelta(seconds=60)
    fractional = parse_event(event(timestamp=D(epoch) + D("0.25")), now=NOW).timestamp
    assert fractional == NOW - timedelta(seconds=59.75)
    as_float = parse_event(event(timestamp=epoch + 0.5), now=NOW).timestamp
    assert as_float == NOW - timedelta(seconds=59.5)


def test_timestamp_defaults_to_now() -> None:
    assert parse_event(event(), now=NOW).timestamp == NOW


def test_timestamp_future_skew() -> None:
    four = (NOW + timedelta(minutes=4)).isoformat()
    assert parse_event(event(timestamp=four), now=NOW).timestamp == NOW + timedelta(minutes=4)
    six = (NOW + timedelta(minutes=6)).isoformat()
    rejects(event(timestamp=six), "timestamp", "timestamp_in_future")


def test_timestamp_late_window() -> None:
    ok = NOW - timedelta(days=34)
    assert parse_event(event(timestamp=ok.isoformat()), now=NOW).timestamp == ok
    rejects(event(timestamp=(NOW - timedelta(days=36)).isoformat()), "timestamp", "timestamp_too_old")


def test_custom_late_window() -> None:
    old = (NOW - timedelta(days=3)).isoformat()
    rejects(event(timestamp=old), "timestamp", "timestamp_too_old", late_window=timedelta(days=2))
    assert parse_event(event(timestamp=old), now=NOW, late_window=timedelta(days=4)).timestamp < NOW


# --- properties and unknown fields ----------------------------------------------------------


def test_properties_size_limit() -> None:
    # {"k":"<v>"} is 8 bytes of JSON around the value
    at_limit = {"k": "x" * (8 * 1024 - 8)}
    assert parse_event(event(properties=at_limit), now=NOW).properties == at_limit
    rejects(event(properties={"k": "x" * (8 * 1024 - 7)}), "properties", "properties_too_large")


def test_properties_must_be_an_object() -> None:
    rejects(event(properties=["a"]), "properties", "invalid_type")


def test_unknown_top_level_field_rejected() -> None:
    rejects(event(amount=3), "amount", "unknown_field")


def test_event_must_be_an_object() -> None:
    rejects(["tenant_id"], None, "invalid_type")


# --- event ids -----------------------------------------------------------------------


def test_given_event_id_is_kept() -> None:
    assert parse_event(event(event_id="req-123"), now=NOW).event_id == "req-123"


def test_generated_event_id_is_uuid7() -> None:
    ids = []
    for _ in range(3):
        ids.append(parse_event(event(), now=NOW).event_id)
        time.sleep(0.002)  # UUIDv7 orders by millisecond; within one it is random
    for text in ids:
        value = uuid.UUID(text)
        assert str(value) == text
        assert value.version == 7
        assert (value.int >> 62) & 0b11 == 0b10  # RFC 9562 variant
        assert value.variant == uuid.RFC_4122
        unix_ms = value.int >> 80
        assert abs(unix_ms - time.time() * 1000) < 60_000
    assert ids == sorted(ids)
    assert len(set(ids)) == 3


def test_uuid7_timestamps_never_decrease() -> None:
    stamps = [uuid.UUID(uuid7()).int >> 80 for _ in range(200)]
    assert stamps == sorted(stamps)
    assert len({uuid7() for _ in range(1000)}) == 1000


def _random_part(event_id: str) -> int:
    """The 74 random bits of a UUIDv7: rand_a (12 bits) and rand_b (62 bits)."""
    value = uuid.UUID(event_id).int
    return ((value >> 64) & 0xFFF) << 62 | (value & ((1 << 62) - 1))


def test_uuid7_random_bits_are_unique_across_threads() -> None:
    results: list[list[str]] = [[] for _ in range(4)]

    def draw(out: list[str]) -> None:
        out.extend(uuid7() for _ in range(3_000))

    threads = [threading.Thread(target=draw, args=(out,)) for out in results]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids = [event_id for out in results for event_id in out]
    assert len({_random_part(event_id) for event_id in ids}) == len(ids) == 12_000


def test_uuid7_in_a_forked_child_does_not_repeat_the_parents_ids() -> None:
    uuid7()  # the parent has drawn random bits before the fork
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report five ids and leave at once
        os.close(read_end)
        os.write(write_end, " ".join(uuid7() for _ in range(5)).encode())
        os._exit(0)
    os.close(write_end)
    parent_ids = [uuid7() for _ in range(5)]
    with os.fdopen(read_end, "rb") as pipe:
        child_ids = pipe.read().decode().split()
    os.waitpid(pid, 0)
    assert len(child_ids) == 5
    assert not {_random_part(i) for i in child_ids} & {_random_part(i) for i in parent_ids}


# --- plans, tenants, metric definitions ----------------------------------------------------


def plan(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "plan_id": "pro",
        "name": "Pro",
        "currency": "EUR",
        "base_fee": "49.00",
        "metrics": [{"metric": "api_calls", "included": 1000, "policy": "charge", "unit_price": "0.01"}],
    }
    data.update(overrides)
    return data


def plan_rejects(data: Any, field: str | None, code: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_plan(data)
    assert (info.value.field, info.value.code) == (field, code), info.value.as_dict()


def test_parse_plan_ok() -> None:
    parsed = parse_plan(plan())
    assert (parsed.plan_id, parsed.currency, parsed.base_fee) == ("pro", "EUR", D("49.00"))
    assert parsed.metrics[0].included == D(1000)
    assert parsed.metrics[0].policy is OveragePolicy.CHARGE
    assert parsed.metric("api_calls") is parsed.metrics[0]
    assert parsed.metric("nope") is None


@pytest.mark.parametrize("bad", ["usd", "EURO", "", 978, None])
def test_plan_bad_currency(bad: Any) -> None:
    plan_rejects(plan(currency=bad), "currency", "invalid_currency")


def test_plan_unknown_policy() -> None:
    metrics = [{"metric": "api_calls", "policy": "ignore"}]
    plan_rejects(plan(metrics=metrics), "metrics[0].policy", "invalid_policy")


def test_plan_policy_is_case_insensitive() -> None:
    parsed = parse_plan(plan(metrics=[{"metric": "m", "policy": "NOTIFY"}]))
    assert parsed.metrics[0].policy is OveragePolicy.NOTIFY


def test_plan_tiers_must_increase() -> None:
    tiers = [{"up_to": 100, "unit_price": 1}, {"up_to": 100, "unit_price": 0.5}]
    plan_rejects(plan(metrics=[{"metric": "m", "tiers": tiers}]), "metrics[0].tiers[1].up_to", "invalid_tiers")


def test_plan_first_tier_bound_must_be_positive() -> None:
    tiers = [{"up_to": 0, "unit_price": 1}]
    plan_rejects(plan(metrics=[{"metric": "m", "tiers": tiers}]), "metrics[0].tiers[0].up_to", "invalid_tiers")


def test_plan_unbounded_tier_must_be_last() -> None:
    tiers = [{"unit_price": 1}, {"up_to": 100, "unit_price": 0.5}]
    plan_rejects(plan(metrics=[{"metric": "m", "tiers": tiers}]), "metrics[0].tiers[0].up_to", "invalid_tiers")


def test_plan_tiers_ok() -> None:
    tiers = [{"up_to": "100", "unit_price": "0.02"}, {"unit_price": "0.01"}]
    parsed = parse_plan(plan(metrics=[{"metric": "m", "tiers": tiers}]))
    assert [(t.up_to, t.unit_price) for t in parsed.metrics[0].tiers] == [(D(100), D("0.02")), (None, D("0.01"))]


def test_plan_duplicate_metric() -> None:
    metrics = [{"metric": "m"}, {"metric": "m", "included": 5}]
    plan_rejects(plan(metrics=metrics), "metrics", "duplicate_metric")


def test_plan_negative_price() -> None:
    plan_rejects(plan(metrics=[{"metric": "m", "unit_price": "-1"}]), "metrics[0].unit_price", "invalid_amount")


def test_plan_unknown_fields() -> None:
    plan_rejects(plan(colour="red"), "colour", "unknown_field")
    plan_rejects(plan(metrics=[{"metric": "m", "price": 1}]), "metrics[0].price", "unknown_field")


def test_tenant_ok_and_defaults() -> None:
    tenant = parse_tenant({"tenant_id": "acme"})
    assert (tenant.tenant_id, tenant.name, tenant.plan_id, tenant.billing_anchor_day) == ("acme", "", None, 1)
    tenant = parse_tenant({"tenant_id": "acme", "plan_id": "pro", "billing_anchor_day": 31})
    assert (tenant.plan_id, tenant.billing_anchor_day) == ("pro", 31)


@pytest.mark.parametrize("bad", [0, 32, -1, "15", 1.0, True])
def test_tenant_bad_anchor_day(bad: Any) -> None:
    with pytest.raises(ValidationError) as info:
        parse_tenant({"tenant_id": "acme", "billing_anchor_day": bad})
    assert (info.value.field, info.value.code) == ("billing_anchor_day", "invalid_anchor_day")


def test_tenant_missing_id_and_unknown_field() -> None:
    with pytest.raises(ValidationError) as info:
        parse_tenant({"name": "Acme"})
    assert (info.value.field, info.value.code) == ("tenant_id", "missing_field")
    with pytest.raises(ValidationError) as info:
        parse_tenant({"tenant_id": "acme", "plan": "pro"})
    assert (info.value.field, info.value.code) == ("plan", "unknown_field")


def test_metric_definition() -> None:
    definition = parse_metric_definition({"name": "storage_gb", "aggregation": "max", "unit": "GB"})
    assert definition.aggregation is Aggregation.MAX
    assert parse_metric_definition({"name": "calls"}).aggregation is Aggregation.SUM
    for data, field, code in [
        ({"name": "x", "aggregation": "median"}, "aggregation", "invalid_aggregation"),
        ({"aggregation": "SUM"}, "name", "missing_field"),
        ({"name": "bad name"}, "name", "invalid_id"),
        ({"name": "x", "unit": "u" * 33}, "unit", "invalid_type"),
        ({"name": "x", "kind": "gauge"}, "kind", "unknown_field"),
    ]:
        with pytest.raises(ValidationError) as info:
            parse_metric_definition(data)
        assert (info.value.field, info.value.code) == (field, code)


# --- aggregates --------------------------------------------------------------------------------


T0 = datetime(2024, 6, 1, tzinfo=timezone.utc)


def filled_state() -> AggregateState:
    state = AggregateState()
    state.add(D("5"), T0 + timedelta(hours=2), "alice")
    state.add(D("2.5"), T0 + timedelta(hours=3), "bob")
    state.add(D("1"), T0 + timedelta(hours=1), "alice")  # late arrival: not the latest
    return state


@pytest.mark.parametrize(
    ("aggregation", "expected"),
    [
        (Aggregation.SUM, D("8.5")),
        (Aggregation.COUNT, D(3)),
        (Aggregation.MAX, D(5)),
        (Aggregation.UNIQUE_COUNT, D(2)),
        (Aggregation.LATEST, D("2.5")),
    ],
)
def test_aggregate_value(aggregation: Aggregation, expected: Decimal) -> None:
    state = filled_state()
    assert state.value(aggregation) == expected
    assert state.totals().value(aggregation) == expected


def test_empty_aggregate_is_zero() -> None:
    state = AggregateState()
    assert all(state.value(a) == 0 for a in Aggregation)


@pytest.mark.parametrize(
    ("aggregation", "quantity", "hours", "user", "expected"),
    [
        (Aggregation.SUM, D("1.5"), 4, "carol", D(10)),
        (Aggregation.COUNT, D("100"), 4, None, D(4)),
        (Aggregation.MAX, D("4"), 4, None, D(5)),
        (Aggregation.MAX, D("7"), 4, None, D(7)),
        (Aggregation.UNIQUE_COUNT, D(1), 4, "alice", D(2)),
        (Aggregation.UNIQUE_COUNT, D(1), 4, "carol", D(3)),
        (Aggregation.UNIQUE_COUNT, D(1), 4, None, D(2)),
        (Aggregation.LATEST, D(9), 4, None, D(9)),  # newer event wins
        (Aggregation.LATEST, D(9), 0, None, D("2.5")),  # older event does not
    ],
)
def test_aggregate_value_after(
    aggregation: Aggregation, quantity: Decimal, hours: int, user: str | None, expected: Decimal
) -> None:
    state = filled_state()
    at = T0 + timedelta(hours=hours)
    assert state.value_after(aggregation, quantity, at, user) == expected
    assert state.value(Aggregation.SUM) == D("8.5")  # unchanged
    # and it agrees with actually adding the event
    state.add(quantity, at, user)
    assert state.value(aggregation) == expected


# -- the common-case fast paths give what the general paths give ---------------------------------

def _outcome(parse: Any, *args: Any) -> object:
    try:
        value = parse(*args)
    except ValidationError as error:
        return ("error", error.code, str(error))
    return (type(value), value, str(value), getattr(value, "tzinfo", None))


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.from_regex(r"\A[0-9]{1,20}\Z"), st.text(max_size=22), st.integers(min_value=0).map(str)))
def test_whole_number_text_fast_path_equals_the_general_path(text: str) -> None:
    assert _outcome(parse_quantity, "quantity", text) == _outcome(_parse_quantity_generally, "quantity", text)


@settings(max_examples=400, deadline=None)
@given(st.one_of(
    st.datetimes(timezones=st.just(timezone.utc)).map(lambda d: d.isoformat().replace("+00:00", "Z")),
    st.datetimes().map(lambda d: d.isoformat() + "Z"),
    st.datetimes().map(lambda d: d.isoformat(sep=" ", timespec="minutes") + "Z"),
    st.from_regex(r"\A[0-9][0-9T:.+\- ]{0,30}Z\Z"),
))
def test_utc_timestamp_text_fast_path_equals_the_general_path(text: str) -> None:
    assert _outcome(parse_timestamp_value, "timestamp", text) == _outcome(_parse_timestamp_text_generally, "timestamp", text)
