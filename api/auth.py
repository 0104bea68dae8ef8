"""JWT bearer tokens (breakdown-runs-api.md, "Authentication"): who the caller is, and for which tenant.

Accepted tokens:

* **HS256**, signed with ``settings.api.jwt_secret`` (a secret shared with the token issuer);
* **RS256**, verified with ``settings.api.jwt_public_key_file``: either a PEM public key, or a JWKS
  document (``{"keys": [...]}``; the token's ``kid`` header picks the key, and a JWKS holding a single
  key also verifies tokens without ``kid``). The file is read when the app is built, and again whenever
  it has changed (its size, modification time or inode, checked on every RS256 token): rotating keys
  is replacing the file, no restart. Publish a new key before tokens use it, and replace the file
  atomically (write a temporary file, rename it over). A replacement that cannot be read as keys is
  logged and ignored: the keys read last stay in force, so a bad deploy of the file locks nobody out.

Every token must carry ``exp`` (checked, with ``settings.api.jwt_leeway_s`` of clock skew) and ``iss``
equal to ``settings.api.jwt_issuer``; ``nbf`` and ``iat`` are checked when present. The tenant is the
string claim ``settings.api.jwt_tenant_claim`` (default ``tenant``) and must be a tenant slug. The
algorithm decides the key, never the other way round: an HS256 token is never checked against the
public key, and ``alg: none`` is refused.

A valid token whose tenant is not in the ``tenants`` table is a 401: tenants are registered explicitly
(``filmroom keys create --tenant T`` creates one), so a mistyped claim fails loudly instead of
opening an empty tenant where the client's events seem to have vanished.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt.algorithms import RSAAlgorithm

from infra.errors import Unauthorized
from infra.settings import ApiSettings
from storage.repo import TENANT_ID_RE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenClaims:
    """What filmroom takes from a verified token."""

    tenant_id: str
    subject: str | None


def looks_like_jwt(token: str) -> bool:
    """Three dot-separated parts, header and payload non-empty (a cheap test before any cryptography;
    an unsigned ``alg: none`` token passes it, to be refused by :class:`JwtVerifier` by name)."""
    parts = token.split(".")
    return len(parts) == 3 and bool(parts[0]) and bool(parts[1])


def _load_public_keys(path: str) -> tuple[RSAPublicKey | None, dict[str, Any]]:
    """``(pem_key, jwks_keys_by_kid)`` from a PEM public key file or a JWKS file."""
    text = Path(path).read_text()
    if not text.lstrip().startswith("{"):
        key = load_pem_public_key(text.encode())  # a private key or garbage raises ValueError
        if not isinstance(key, RSAPublicKey):
            raise ValueError(f"{path}: RS256 needs an RSA public key")
        return key, {}
    document = json.loads(text)
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list) or not keys:
        raise ValueError(f"{path}: a JWKS file needs a non-empty 'keys' list")
    by_kid: dict[str, Any] = {}
    for index, jwk in enumerate(keys):
        if not isinstance(jwk, dict) or jwk.get("kty") != "RSA":
            continue  # other key types cannot verify RS256
        by_kid[str(jwk.get("kid", f"#{index}"))] = RSAAlgorithm.from_jwk(json.dumps(jwk))
    if not by_kid:
        raise ValueError(f"{path}: the JWKS holds no RSA key")
    return None, by_kid


def _file_stamp(path: str) -> tuple[int, int, int] | None:
    """What tells a replaced or rewritten file from the one read before (None: it cannot be read)."""
    try:
        stat = Path(path).stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


class JwtVerifier:
    """Verifies tokens against one :class:`ApiSettings`; build once per app (it reads the key file,
    and reads it again when it changes: see the module docstring)."""

    def __init__(self, settings: ApiSettings) -> None:
        self.settings = settings
        self._pem_key: RSAPublicKey | None = None
        self._jwks: dict[str, Any] = {}
        self._stamp: tuple[int, int, int] | None = None
        self._lock = threading.Lock()
        if settings.jwt_public_key_file:
            self._stamp = _file_stamp(settings.jwt_public_key_file)
            self._pem_key, self._jwks = _load_public_keys(settings.jwt_public_key_file)

    def _refresh_keys(self) -> None:
        """Read the key file again if it changed since it was last read; keep the old keys if the
        new file is not a usable key (logged)."""
        path = self.settings.jwt_public_key_file
        if not path:
            return
        stamp = _file_stamp(path)
        if stamp is None or stamp == self._stamp:
            return
        with self._lock:
            if stamp == self._stamp:
                return
            self._stamp = stamp  # a bad file is reported once, not on every token
            try:
                self._pem_key, self._jwks = _load_public_keys(path)
            except (OSError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
                log.warning(
                    "JWT key file %s changed but is unusable, keeping the previous keys: %s", path, exc
                )
            else:
                log.info("JWT key file %s read again (%d JWKS keys)", path, len(self._jwks))

    def _key_for(self, header: dict[str, Any]) -> tuple[Any, str]:
        algorithm = header.get("alg")
        if algorithm == "HS256":
            return self.settings.jwt_secret, "HS256"
        if algorithm == "RS256":
            self._refresh_keys()
            if self._pem_key is not None:
                return self._pem_key, "RS256"
            kid = header.get("kid")
            if kid is not None and str(kid) in self._jwks:
                return self._jwks[str(kid)], "RS256"
            if kid is None and len(self._jwks) == 1:
                return next(iter(self._jwks.values())), "RS256"
            if self._jwks:
                raise Unauthorized("the token's key id (kid) is not in the configured JWKS")
            raise Unauthorized("RS256 tokens are not accepted: no public key is configured")
        raise Unauthorized("token algorithm must be HS256 or RS256")

    def verify(self, token: str) -> TokenClaims:
        """The token's tenant and subject; ``Unauthorized`` for anything wrong with it."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized("malformed bearer token") from None
        key, algorithm = self._key_for(header)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                issuer=self.settings.jwt_issuer,
                leeway=self.settings.jwt_leeway_s,
                options={"require": ["exp", "iss"], "verify_aud": False},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the token has expired") from None
        except jwt.InvalidIssuerError:
            raise Unauthorized("the token's issuer (iss) is not accepted") from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthorized(f"the token has no {exc.claim!r} claim") from None
        except jwt.PyJWTError:
            raise Unauthorized("invalid token signature or claims") from None
        claim = self.settings.jwt_tenant_claim
        tenant = claims.get(claim)
        if not isinstance(tenant, str) or not TENANT_ID_RE.fullmatch(tenant):
            raise Unauthorized(f"the token's {claim!r} claim must name a tenant (a lowercase slug)")
        subject = claims.get("sub")
        return TokenClaims(tenant_id=tenant, subject=subject if isinstance(subject, str) else None)
