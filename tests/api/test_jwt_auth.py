"""JWT bearer auth against a real uvicorn server: HS256, RS256 (PEM and JWKS, keys made here with
``cryptography``), every refusal, and API keys and JWTs authenticating the same tenant."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from sqlalchemy.engine import Engine

from api.main import create_app
from infra.settings import Settings
from tests.fixtures.api import (
    ApiServer,
    ApiServerFactory,
    ensure_tenant,
    mint_jwt,
    sqlite_only,
    tweak_settings,
)

pytestmark = sqlite_only
LISTING = "/v1/events/breakdown-runs"


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def hs256_signed_with(secret: bytes, payload: dict[str, Any]) -> str:
    """An HS256 token made by hand (PyJWT refuses a PEM as an HMAC secret, attackers do not)."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = json.dumps({"alg": "HS256", "typ": "JWT"}).encode()
    signing_input = f"{b64(header)}.{b64(json.dumps(payload).encode())}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def claims(settings: Settings, tenant: str = "acme", **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": settings.api.jwt_issuer, "tenant": tenant, "sub": "u1", "exp": now + 300, **extra}


def get(server: ApiServer, token: str, path: str = LISTING, *, bare: bool = False) -> httpx.Response:
    header = token if bare else f"Bearer {token}"
    return httpx.get(f"{server.url}{path}", headers={"Authorization": header}, timeout=10)


def refused(response: httpx.Response, fragment: str = "") -> None:
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["error"]["code"] == "unauthorized" and fragment in body["error"]["details"], body
    assert response.headers["WWW-Authenticate"] == "Bearer"


@pytest.fixture
def server(api_server_factory: ApiServerFactory, engine: Engine) -> ApiServer:
    for tenant in ("acme", "globex"):
        ensure_tenant(engine, tenant)
    return api_server_factory()


# --- HS256 -----------------------------------------------------------------------------------------


def test_an_hs256_token_authenticates_every_kind_of_route(server: ApiServer) -> None:
    token = mint_jwt(server.settings, "acme")
    assert get(server, token).json() == []
    assert get(server, token, "/v1/jobs").status_code == 200
    assert get(server, token, "/v1/webhooks").status_code == 200


def test_a_bare_token_without_the_bearer_scheme_works_as_in_the_documents_examples(server: ApiServer) -> None:
    assert get(server, mint_jwt(server.settings, "acme"), bare=True).status_code == 200
    refused(get(server, "not-a-token", bare=True), "missing")


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"exp": int(time.time()) - 3600}, "expired"),
        ({"exp": None}, "'exp'"),
        ({"iss": None}, "'iss'"),
        ({"iss": "someone-else"}, "issuer"),
        ({"tenant": None}, "'tenant' claim"),
        ({"tenant": "Not A Slug!"}, "'tenant' claim"),
        ({"tenant": 42}, "'tenant' claim"),
        ({"tenant": "initech"}, "not registered"),
        ({"nbf": int(time.time()) + 3600}, "invalid"),
        ({"exp": "tomorrow"}, "invalid"),
    ],
)
def test_a_token_with_bad_claims_is_refused(server: ApiServer, change: dict[str, Any], fragment: str) -> None:
    payload = {k: v for k, v in {**claims(server.settings), **change}.items() if v is not None}
    refused(get(server, jwt.encode(payload, server.settings.api.jwt_secret, "HS256")), fragment)


def test_expiry_allows_the_configured_clock_skew(server: ApiServer) -> None:
    within = mint_jwt(server.settings, "acme", exp=int(time.time()) - 5)  # leeway 30 s by default
    assert get(server, within).status_code == 200
    refused(get(server, mint_jwt(server.settings, "acme", exp=int(time.time()) - 60)), "expired")


def test_a_token_signed_with_another_secret_or_none_is_refused(server: ApiServer) -> None:
    refused(get(server, jwt.encode(claims(server.settings), "x" * 40, "HS256")), "signature")
    refused(get(server, jwt.encode(claims(server.settings), "", "none")), "HS256 or RS256")
    refused(get(server, jwt.encode(claims(server.settings), server.settings.api.jwt_secret, "HS512")))
    refused(get(server, "a.b.c"), "malformed")


def test_the_tenant_claim_is_configurable(
    api_server_factory: ApiServerFactory, engine: Engine, api_settings: Settings
) -> None:
    ensure_tenant(engine, "acme")
    server = api_server_factory(
        tweak_settings(api_settings, api={"jwt_tenant_claim": "org", "jwt_issuer": "idp"})
    )
    token = jwt.encode(
        {"iss": "idp", "org": "acme", "exp": int(time.time()) + 60}, server.settings.api.jwt_secret, "HS256"
    )
    assert get(server, token).status_code == 200
    wrong_claim = {"iss": "idp", "tenant": "acme", "exp": int(time.time()) + 60}
    refused(get(server, jwt.encode(wrong_claim, server.settings.api.jwt_secret, "HS256")), "'org' claim")


# --- RS256 -----------------------------------------------------------------------------------------


def rs256_server(factory: ApiServerFactory, settings: Settings, engine: Engine, key_file: Path) -> ApiServer:
    ensure_tenant(engine, "acme")
    return factory(tweak_settings(settings, api={"jwt_public_key_file": str(key_file)}))


def test_rs256_with_a_pem_public_key(
    api_server_factory: ApiServerFactory, api_settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    key = new_key()
    (tmp_path / "public.pem").write_bytes(public_pem(key))
    server = rs256_server(api_server_factory, api_settings, engine, tmp_path / "public.pem")
    assert get(server, jwt.encode(claims(server.settings), key, "RS256")).status_code == 200
    refused(get(server, jwt.encode(claims(server.settings), new_key(), "RS256")), "signature")
    # algorithm confusion: HS256 "signed" with the public PEM as the HMAC secret is not accepted
    refused(get(server, hs256_signed_with(public_pem(key), claims(server.settings))), "signature")
    assert get(server, mint_jwt(server.settings, "acme")).status_code == 200  # HS256 still works
    expired = jwt.encode(claims(server.settings, exp=int(time.time()) - 3600), key, "RS256")
    refused(get(server, expired), "expired")


def test_rs256_with_a_jwks_file_picks_the_key_by_kid(
    api_server_factory: ApiServerFactory, api_settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    keys = {"k1": new_key(), "k2": new_key()}
    jwks = {
        "keys": [
            {**json.loads(RSAAlgorithm.to_jwk(k.public_key())), "kid": kid, "use": "sig"}
            for kid, k in keys.items()
        ]
    }
    (tmp_path / "jwks.json").write_text(json.dumps(jwks))
    server = rs256_server(api_server_factory, api_settings, engine, tmp_path / "jwks.json")

    def token(key: rsa.RSAPrivateKey, **headers: Any) -> str:
        return jwt.encode(claims(server.settings), key, "RS256", headers=headers or None)

    assert get(server, token(keys["k1"], kid="k1")).status_code == 200
    assert get(server, token(keys["k2"], kid="k2")).status_code == 200
    refused(get(server, token(keys["k1"], kid="k2")), "signature")
    refused(get(server, token(keys["k1"], kid="k9")), "kid")
    refused(get(server, token(keys["k1"])), "kid")  # two keys: a kid is needed


def test_a_one_key_jwks_verifies_tokens_without_kid(
    api_server_factory: ApiServerFactory, api_settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    key = new_key()
    (tmp_path / "jwks.json").write_text(
        json.dumps({"keys": [json.loads(RSAAlgorithm.to_jwk(key.public_key()))]})
    )
    server = rs256_server(api_server_factory, api_settings, engine, tmp_path / "jwks.json")
    assert get(server, jwt.encode(claims(server.settings), key, "RS256")).status_code == 200


def jwks_of(keys: dict[str, rsa.RSAPrivateKey]) -> str:
    return json.dumps(
        {"keys": [{**json.loads(RSAAlgorithm.to_jwk(k.public_key())), "kid": kid} for kid, k in keys.items()]}
    )


def replace_atomically(path: Path, text: str) -> None:
    """How a key file is rotated: a new file renamed over the old one."""
    staged = path.with_suffix(".new")
    staged.write_text(text)
    staged.replace(path)


def test_a_rotated_jwks_file_is_read_again_without_a_restart(
    api_server_factory: ApiServerFactory, api_settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    old, new = new_key(), new_key()
    path = tmp_path / "jwks.json"
    path.write_text(jwks_of({"old": old}))
    server = rs256_server(api_server_factory, api_settings, engine, path)

    def token(key: rsa.RSAPrivateKey, kid: str) -> str:
        return jwt.encode(claims(server.settings), key, "RS256", headers={"kid": kid})

    assert get(server, token(old, "old")).status_code == 200
    refused(get(server, token(new, "new")), "kid")  # not published yet

    replace_atomically(path, jwks_of({"old": old, "new": new}))  # publish the new key
    assert get(server, token(new, "new")).status_code == 200
    assert get(server, token(old, "old")).status_code == 200

    replace_atomically(path, "{not json")  # a bad deploy of the file: the keys read last stay
    assert get(server, token(new, "new")).status_code == 200
    path.unlink()
    assert get(server, token(old, "old")).status_code == 200

    replace_atomically(path, jwks_of({"new": new}))  # retire the old key
    refused(get(server, token(old, "old")), "kid")
    assert get(server, token(new, "new")).status_code == 200


@pytest.mark.parametrize(
    "content",
    [
        lambda: b"not a key",
        lambda: b'{"keys": []}',
        lambda: new_key().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    ],
)
def test_an_unusable_key_file_stops_the_app_from_starting(
    api_settings: Settings, tmp_path: Path, content: Callable[[], bytes]
) -> None:
    (tmp_path / "key").write_bytes(content())
    with pytest.raises(ValueError):
        create_app(tweak_settings(api_settings, api={"jwt_public_key_file": str(tmp_path / "key")}))


# --- API keys and JWTs together --------------------------------------------------------------------


def test_an_api_key_and_a_jwt_authenticate_the_same_tenant(
    server: ApiServer, api_key: str, footage_file: Path
) -> None:
    token = mint_jwt(server.settings, "acme")
    body = {"sport": "soccer", "title": "Derby", "videos": [{"url": str(footage_file), "angle": "main"}]}
    with server.client(api_key) as by_key:
        event = by_key.post("/v1/events", json=body).json()
        run = by_key.post(f"/v1/events/{event['_id']}/breakdown-runs", json={"mode": "manual"}).json()
    seen = get(server, token, f"/v1/events/{event['_id']}/breakdown-runs").json()
    assert [r["_id"] for r in seen] == [run["_id"]] and seen[0]["tenant"] == "acme"
    with server.client(token) as by_token:
        again = by_token.post(f"/v1/events/{event['_id']}/breakdown-runs", json={"mode": "manual"}).json()
    with server.client(api_key) as by_key:
        runs = by_key.get(f"/v1/events/{event['_id']}/breakdown-runs").json()
        assert {r["_id"] for r in runs} == {run["_id"], again["_id"]}
        assert by_key.get(f"/v1/jobs/{again['jobId']}").status_code == 200
    other = mint_jwt(server.settings, "globex")
    assert get(server, other, f"/v1/events/{event['_id']}/breakdown-runs").status_code == 404
    assert get(server, other, f"/v1/jobs/{run['jobId']}").status_code == 404
