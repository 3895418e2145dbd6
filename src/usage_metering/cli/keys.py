"""API keys: create (token shown once), list, revoke."""

from __future__ import annotations

import click

from .common import open_metering
from .output import KEY_COLUMNS, as_json, emit


@click.group()
def keys() -> None:
    """API keys: once one exists, the HTTP API needs 'Authorization: Bearer <key>'."""


@keys.command("create")
@click.argument("name")
@click.option(
    "--scope",
    type=click.Choice(["admin", "tenant"]),
    required=True,
    help="admin: everything; tenant: one tenant's events and reports.",
)
@click.option("--tenant", "tenant_id", metavar="TENANT", help="The tenant of a --scope tenant key.")
@click.pass_context
def keys_create(ctx: click.Context, name: str, scope: str, tenant_id: str | None) -> None:
    """Create a key and print its token: the only time it is shown (only a hash is stored)."""
    with open_metering(ctx, writes="config") as metering:
        created, token = metering.create_api_key(name, scope, tenant_id)
        key = {**as_json(created), "token": token}
    emit(key, [key], (*KEY_COLUMNS, "token"))
    click.echo("Store this token now: it is shown only once and cannot be recovered.", err=True)


@keys.command("list")
@click.pass_context
def keys_list(ctx: click.Context) -> None:
    """Every key, revoked ones included (never the tokens)."""
    with open_metering(ctx) as metering:
        items = as_json(metering.list_api_keys())
    emit(items, items, KEY_COLUMNS)


@keys.command("revoke")
@click.argument("key_id", metavar="KEY_ID")
@click.pass_context
def keys_revoke(ctx: click.Context, key_id: str) -> None:
    """Revoke a key: requests with it fail from now on."""
    with open_metering(ctx, writes="config") as metering:
        key = as_json(metering.revoke_api_key(key_id))
    emit(key, [key], KEY_COLUMNS)
