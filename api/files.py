"""Download links for run files: the breakdown-runs ``fileUrl`` (and any caller that needs a link).

:func:`file_url` answers ``fileUrl`` for a run (breakdown-runs-api.md, "File Availability"): null while
the breakdown file does not exist yet, when the run failed (``failed``/``file_failed``) or when the file
is gone from the artifact store; otherwise a URL that works without an ``Authorization`` header:

* **object storage** (``s3://``, ``gs://``, ... through fsspec): the filesystem's own presigned URL
  (``fs.sign(path, expiration=settings.api.link_ttl_s)``), so the download never touches the API;
* **a local artifact root** (and any filesystem that cannot presign, e.g. ``memory://``): a short-lived
  link to the API, ``{public_url}/v1/files/{token}``, served by :data:`router`. The token names the
  tenant, event, run and file and carries an expiry; it is signed with an HMAC-SHA256 key derived from
  ``settings.api.link_secret`` (:class:`LinkSigner`). A forged, malformed or expired link is a 401
  ``unauthorized``; a valid link whose file is gone is a 404 ``not_found``.

A URL is only given for a ``file_ready`` run: ``file_ready`` is the status that says the JSON file was
written completely (a retried run may hold a stale file from an earlier attempt while it is
``processing``/``completed``), and the store is asked whether the file is still there.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Protocol

from fastapi import APIRouter, Path, Response
from fastapi.responses import StreamingResponse
from fsspec.implementations.local import LocalFileSystem

from api.deps import ArtifactsDep, SettingsDep
from api.errors import error_responses
from infra.errors import NotFound, Unauthorized
from infra.settings import Settings
from storage.artifacts import ARTIFACT_FILES, ArtifactStore, RunRef
from storage.models import RunStatus

logger = logging.getLogger("filmroom.api.files")

BREAKDOWN_FILE = ARTIFACT_FILES["breakdown"]
LINK_PURPOSE = b"filmroom file link v1"  # key separation: this key signs nothing but file links
MAX_TOKEN_CHARS = 512
MEDIA_TYPES = {".parquet": "application/vnd.apache.parquet", ".json": "application/json", ".csv": "text/csv"}


# --- signed links ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileLink:
    """What a verified link grants: one file of one run, until ``expires`` (unix seconds)."""

    ref: RunRef
    file_name: str
    expires: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class LinkSigner:
    """Signs and verifies ``<payload>.<mac>`` tokens (both base64url, no padding).

    The payload is compact JSON ``{"t": tenant, "e": event, "r": run, "f": file, "x": expiry}``; the MAC
    is HMAC-SHA256 over the payload's bytes with ``HMAC(link_secret, LINK_PURPOSE)`` as the key.
    """

    def __init__(self, secret: str, ttl_s: int) -> None:
        self._key = hmac.new(secret.encode(), LINK_PURPOSE, hashlib.sha256).digest()
        self.ttl_s = ttl_s

    @classmethod
    def from_settings(cls, settings: Settings) -> LinkSigner:
        return cls(settings.api.link_secret, settings.api.link_ttl_s)

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()

    def sign(self, ref: RunRef, file_name: str, *, now: float | None = None) -> str:
        expires = int(now if now is not None else time.time()) + self.ttl_s
        claims = {"t": ref.tenant, "e": ref.event_id, "r": ref.run_id, "f": file_name, "x": expires}
        payload = json.dumps(claims, separators=(",", ":"), sort_keys=True).encode()
        return f"{_b64(payload)}.{_b64(self._mac(payload))}"

    def verify(self, token: str, *, now: float | None = None) -> FileLink:
        """The link ``token`` grants; ``Unauthorized`` when it is malformed, forged or expired."""
        if len(token) > MAX_TOKEN_CHARS or token.count(".") != 1:
            raise Unauthorized("invalid file link")
        encoded, mac = token.split(".")
        try:
            payload, presented = _unb64(encoded), _unb64(mac)
        except (binascii.Error, ValueError):
            raise Unauthorized("invalid file link") from None
        if not hmac.compare_digest(self._mac(payload), presented):
            raise Unauthorized("invalid file link")
        try:  # signed by us, so well-formed unless the format changed
            claims = json.loads(payload)
            link = FileLink(
                ref=RunRef(claims["t"], claims["e"], claims["r"]),
                file_name=str(claims["f"]),
                expires=int(claims["x"]),
            )
        except (ValueError, KeyError, TypeError):
            raise Unauthorized("invalid file link") from None
        if link.expires < (now if now is not None else time.time()):
            raise Unauthorized("the file link has expired; read the run again for a fresh fileUrl")
        return link


def api_file_link(settings: Settings, ref: RunRef, file_name: str, *, now: float | None = None) -> str:
    """``{public_url}/v1/files/{token}``: a link served by this API, valid for ``link_ttl_s``."""
    token = LinkSigner.from_settings(settings).sign(ref, file_name, now=now)
    return f"{settings.api.public_url.rstrip('/')}/v1/files/{token}"


def download_url(
    settings: Settings, store: ArtifactStore, ref: RunRef, file_name: str, *, now: float | None = None
) -> str:
    """A link to one of the run's files that needs no Authorization header (presigned when possible).

    Does not check that the file exists (see :func:`file_url`).
    """
    if not isinstance(store.fs, LocalFileSystem):
        try:
            signed = store.fs.sign(store.path(ref, file_name), expiration=settings.api.link_ttl_s)
            return str(signed)
        except NotImplementedError:  # memory://, and stores without presigning: the API serves it
            pass
        except Exception:
            logger.warning("could not presign %s of run %s; linking the API", file_name, ref, exc_info=True)
    return api_file_link(settings, ref, file_name, now=now)


# --- fileUrl ---------------------------------------------------------------------------------------


class RunLike(Protocol):
    """What :func:`file_url` reads of a run (a ``storage.models.Run`` qualifies)."""

    @property
    def id(self) -> str: ...
    @property
    def tenant_id(self) -> str: ...
    @property
    def event_id(self) -> str: ...
    @property
    def status(self) -> str: ...


def file_url_for(
    settings: Settings,
    store: ArtifactStore,
    *,
    tenant_id: str,
    event_id: str,
    run_id: str,
    status: str,
    now: float | None = None,
) -> str | None:
    """``fileUrl`` from a run's parts (e.g. a webhook delivery's snapshot: ``tenant_id``, ``event_id``,
    ``run_id``, ``status``): None unless the run is ``file_ready`` and its breakdown file exists."""
    if RunStatus(status) != RunStatus.file_ready:
        return None
    ref = RunRef(tenant_id, event_id, run_id)
    try:
        if not store.exists(ref, BREAKDOWN_FILE):
            return None
    except Exception:  # an unreachable store: the file is not available right now
        logger.warning("could not check the breakdown file of run %s", ref, exc_info=True)
        return None
    return download_url(settings, store, ref, BREAKDOWN_FILE, now=now)


def file_url(
    settings: Settings, store: ArtifactStore, run: RunLike, *, now: float | None = None
) -> str | None:
    """The breakdown-runs ``fileUrl`` of ``run`` (see the module docstring)."""
    return file_url_for(
        settings,
        store,
        tenant_id=run.tenant_id,
        event_id=run.event_id,
        run_id=run.id,
        status=run.status,
        now=now,
    )


# --- the route that serves API links ---------------------------------------------------------------

router = APIRouter(prefix="/v1/files", tags=["files"])


@router.get(
    "/{token}",
    response_class=Response,
    summary="Download a file through a signed link",
    responses={
        200: {
            "description": "The file.",
            "content": {
                media: {"schema": {"type": "string", "format": "binary"}} for media in MEDIA_TYPES.values()
            },
        },
        **error_responses(404),
    },
    openapi_extra={"security": []},
)
def download_file(
    token: Annotated[
        str, Path(description="The signed token of a `fileUrl` link.", max_length=MAX_TOKEN_CHARS)
    ],
    settings: SettingsDep,
    store: ArtifactsDep,
) -> Response:
    """A file a ``fileUrl`` points at. Needs no ``Authorization`` header: the link itself is the
    credential, valid for ``link_ttl_s`` seconds. 401 for a forged or expired link, 404 when the
    file is gone."""
    link = LinkSigner.from_settings(settings).verify(token)
    if link.file_name not in ARTIFACT_FILES.values() or not store.exists(link.ref, link.file_name):
        raise NotFound("the file is no longer available")
    location = store.path(link.ref, link.file_name)

    def chunks() -> Iterator[bytes]:
        with store.fs.open(location, "rb") as f:
            while chunk := f.read(1 << 20):
                yield chunk

    media_type = MEDIA_TYPES.get("." + link.file_name.rsplit(".", 1)[-1], "application/octet-stream")
    return StreamingResponse(
        chunks(),
        media_type=media_type,
        headers={
            "Content-Disposition": f'attachment; filename="{link.file_name}"',
            "Cache-Control": "private, no-store",
        },
    )
