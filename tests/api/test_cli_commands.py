"""The command-line faces: `filmroom keys` (a created key works at once, is listed without its secret, a
revoked one is refused) and the standalone `filmroom dispatcher`."""

from __future__ import annotations

import pytest
import typer
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from api.deps import write_scope
from api.keys_cli import keys_app
from api.serve_cli import dispatcher
from infra.settings import get_settings
from storage import repo
from storage.models import EventKind, RunStatus
from tests.fixtures.api import ApiServer, WebhookReceiver, sqlite_only

runner = CliRunner()
pytestmark = sqlite_only


def test_keys_are_created_listed_and_revoked(api_server: ApiServer, engine: Engine) -> None:
    created = runner.invoke(keys_app, ["create", "--tenant", "acme", "--name", "ci"])
    assert created.exit_code == 0, created.output
    key = created.stdout.strip()
    assert key.startswith("frk_") and "\n" not in key
    with api_server.client(key) as client:
        assert client.get("/v1/jobs").status_code == 200

    listed = runner.invoke(keys_app, ["list", "--tenant", "acme"], terminal_width=200)
    assert listed.exit_code == 0, listed.output
    assert "ci" in listed.stdout and key.split("_")[1] in listed.stdout
    assert key.split("_", 2)[2] not in listed.stdout  # never the secret part

    key_id = created.stderr.split("key ")[1].split()[0]
    revoked = runner.invoke(keys_app, ["revoke", key_id])
    assert revoked.exit_code == 0, revoked.output
    with api_server.client(key) as client:
        response = client.get("/v1/jobs")
    assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized"
    assert runner.invoke(keys_app, ["revoke", "0" * 24]).exit_code == 1


def test_a_tenant_id_must_be_a_slug(engine: Engine) -> None:
    result = runner.invoke(keys_app, ["create", "--tenant", "Not A Slug"])
    assert result.exit_code == 2 and "slug" in result.stderr


def test_the_standalone_dispatcher_sends_what_is_due(
    engine: Engine, webhook_receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FILMROOM_WEBHOOKS__ALLOW_HOSTS", '["127.0.0.1"]')
    get_settings.cache_clear()
    with write_scope(engine) as session:
        repo.create_tenant(session, tenant_id="acme", name="Acme")
        event = repo.create_event(
            session, tenant_id="acme", kind=EventKind.game, sport="soccer", title="t",
            sources=[{"angle": "main", "uri": "https://cdn.example.com/a.mp4"}],
        )  # fmt: skip
        run = repo.create_run(session, tenant_id="acme", event_id=event.id).run
        repo.create_webhook_subscription(
            session,
            tenant_id="acme",
            run_id=run.id,
            url=f"{webhook_receiver.url}/h",
            events=["job.fail"],
            secret="s",
        )
        repo.transition_run(session, run_id=run.id, status=RunStatus.failed, error_code="wrong_video")
    cli = typer.Typer()
    cli.command()(dispatcher)
    result = runner.invoke(cli, ["--once"])
    assert result.exit_code == 0, result.output
    assert "1 delivery attempt(s) made" in result.stdout
    [hook] = webhook_receiver.wait_for(1)
    assert hook.json()["errors"][0]["code"] == "wrong_video"
