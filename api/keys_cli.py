"""``filmroom keys``: create, list and revoke Jobs API keys (stored hashed; the plaintext is shown once).

Registered in ``api/cli.py`` with ``app.add_typer(keys_app, name="keys")``.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from sqlmodel import col, select

from infra.errors import FilmroomError
from storage import repo
from storage.db import init_db, session_scope
from storage.models import ApiKey

keys_app = typer.Typer(help="Manage Jobs API keys.", no_args_is_help=True)
err = Console(stderr=True)


@keys_app.command("create")
def create(
    tenant: Annotated[str, typer.Option("--tenant", help="Tenant id (lowercase slug); created if new.")],
    name: Annotated[str, typer.Option("--name", help="Label to recognise the key by.")] = "default",
) -> None:
    """Create a key for TENANT and print it once (stdout carries only the key)."""
    init_db()
    try:
        with session_scope() as session:
            if repo.get_tenant(session, tenant_id=tenant) is None:
                repo.create_tenant(session, tenant_id=tenant, name=tenant)
            issued = repo.create_api_key(session, tenant_id=tenant, name=name)
    except FilmroomError as exc:
        err.print(f"[red]error:[/red] {exc.details}")
        raise typer.Exit(2) from None
    err.print(
        f"key [bold]{issued.key.id}[/bold] for tenant {tenant!r} — store it now, it is not shown again:"
    )
    typer.echo(issued.plaintext)


@keys_app.command("list")
def list_keys(tenant: Annotated[str, typer.Option("--tenant", help="Tenant whose keys are listed.")]) -> None:
    """List TENANT's keys (never their secrets)."""
    init_db()
    with session_scope() as session:
        keys = session.exec(
            select(ApiKey).where(ApiKey.tenant_id == tenant).order_by(col(ApiKey.created_at))
        ).all()
    table = Table("id", "name", "prefix", "created", "last used", "revoked")
    for key in keys:
        table.add_row(
            key.id,
            key.name,
            f"frk_{key.prefix}_…",
            repo.iso_utc(key.created_at),
            repo.iso_utc(key.last_used_at) if key.last_used_at else "-",
            repo.iso_utc(key.revoked_at) if key.revoked_at else "-",
        )
    Console().print(table)


@keys_app.command("revoke")
def revoke(key_id: Annotated[str, typer.Argument(help="Id of the key (from `keys list`).")]) -> None:
    """Revoke a key; requests with it get 401 from then on."""
    init_db()
    with session_scope() as session:
        key = session.get(ApiKey, key_id)
        if key is None:
            err.print(f"[red]error:[/red] no key {key_id!r}")
            raise typer.Exit(1)
        revoked = repo.revoke_api_key(session, tenant_id=key.tenant_id, key_id=key_id)
    assert revoked is not None and revoked.revoked_at is not None
    err.print(f"key {key_id} of tenant {revoked.tenant_id!r} revoked at {repo.iso_utc(revoked.revoked_at)}")
