"""`Metering` and `MeteringClient` implement `MeteringApi` exactly: same methods, parameters and return types."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any

import pytest

from usage_metering import Metering, MeteringClient
from usage_metering.interface import MeteringApi

pytestmark = pytest.mark.unit

SHARED = sorted(
    name
    for name, member in vars(MeteringApi).items()
    if callable(member) and not name.startswith("_") and name not in {"__init__"}
)


def shape(function: Callable[..., Any]) -> tuple[list[tuple[str, Any, Any, Any]], Any]:
    """A method's parameters (name, kind, default, resolved type) and resolved return type, without self."""
    hints = typing.get_type_hints(function)
    parameters = [
        (p.name, p.kind, p.default, hints.get(p.name, inspect.Parameter.empty))
        for p in list(inspect.signature(function).parameters.values())[1:]
    ]
    return parameters, hints.get("return", inspect.Parameter.empty)


def test_the_interface_lists_the_library_calls() -> None:
    assert {"record_events", "record", "usage", "quota", "billing_report", "save_plan", "create_api_key"} <= set(
        SHARED
    )


@pytest.mark.parametrize("implementation", [Metering, MeteringClient], ids=lambda c: c.__name__)
@pytest.mark.parametrize("name", SHARED)
def test_each_implementation_matches_the_interface(implementation: type, name: str) -> None:
    assert hasattr(implementation, name), f"{implementation.__name__} lacks {name}"
    assert shape(getattr(implementation, name)) == shape(getattr(MeteringApi, name))


def test_a_drifting_signature_is_caught() -> None:
    """The comparison sees a renamed parameter, a changed default and a changed return type."""

    class Drifted:
        def quota(self, tenant: str, metric: str) -> Any: ...

        def top_users(self, tenant_id: str, metric: str, *, limit: int = 5, period: str | None = None) -> Any: ...

    assert shape(Drifted.quota) != shape(MeteringApi.quota)
    assert shape(Drifted.top_users) != shape(MeteringApi.top_users)
