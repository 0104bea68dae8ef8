"""fileUrl links: the HMAC-signed API link (local roots), presigned URLs (object stores), and when
``file_url`` is null. The served route itself is exercised over HTTP in test_events_writes.py."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from api.files import LinkSigner, api_file_link, file_url, file_url_for
from infra.errors import Unauthorized
from infra.settings import Settings
from storage.artifacts import ArtifactStore, RunRef
from storage.models import Run, RunStatus
from tests.fixtures.api import tweak_settings

REF = RunRef("acme", "65a000000000000000000001", "65a000000000000000000002")


def settings_for(root: str, **api: Any) -> Settings:
    return tweak_settings(Settings(), storage={"root": root}, api={"public_url": "https://api.test", **api})


def run_of(status: RunStatus) -> Run:
    return Run(id=REF.run_id, tenant_id=REF.tenant, event_id=REF.event_id, status=status)


def test_a_signed_link_verifies_to_its_run_and_file_until_it_expires() -> None:
    signer = LinkSigner("s" * 40, ttl_s=60)
    token = signer.sign(REF, "breakdown.json", now=1_000_000)
    link = signer.verify(token, now=1_000_059)
    assert (link.ref, link.file_name, link.expires) == (REF, "breakdown.json", 1_000_060)
    with pytest.raises(Unauthorized, match="expired"):
        signer.verify(token, now=1_000_061)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),  # another MAC
        lambda t: t.split(".")[0],  # no MAC
        lambda t: "x" + t,  # another payload
        lambda t: t + ".more",
        lambda t: "%%%.%%%",
        lambda t: "a" * 600,
    ],
)
def test_a_forged_or_malformed_link_is_refused(tamper: Any) -> None:
    signer = LinkSigner("s" * 40, ttl_s=60)
    with pytest.raises(Unauthorized):
        signer.verify(tamper(signer.sign(REF, "breakdown.json")))


def test_a_link_signed_with_another_secret_is_refused() -> None:
    token = LinkSigner("a" * 40, ttl_s=60).sign(REF, "breakdown.json")
    with pytest.raises(Unauthorized):
        LinkSigner("b" * 40, ttl_s=60).verify(token)


def test_file_url_is_null_until_the_file_exists_when_the_run_failed_and_when_the_file_is_gone(
    tmp_path: Path,
) -> None:
    settings = settings_for(str(tmp_path / "artifacts"))
    store = ArtifactStore.from_settings(settings)
    assert file_url(settings, store, run_of(RunStatus.file_ready)) is None  # no file yet
    store.write_json(REF, "breakdown", {"ok": True})
    for status in (RunStatus.queued, RunStatus.processing, RunStatus.completed):
        assert file_url(settings, store, run_of(status)) is None  # not (yet) known to be complete
    for status in (RunStatus.failed, RunStatus.file_failed):
        assert file_url(settings, store, run_of(status)) is None

    url = file_url(settings, store, run_of(RunStatus.file_ready), now=2_000_000)
    assert url is not None and url.startswith("https://api.test/v1/files/")
    assert url == api_file_link(settings, REF, "breakdown.json", now=2_000_000)
    token = url.rsplit("/", 1)[1]
    assert LinkSigner.from_settings(settings).verify(token, now=2_000_000).ref == REF

    Path(store.path(REF, "breakdown")).unlink()
    assert file_url(settings, store, run_of(RunStatus.file_ready)) is None  # gone


def test_a_store_that_cannot_presign_links_the_api(tmp_path: Path) -> None:
    settings = settings_for(f"memory://links-{time.monotonic_ns()}")
    store = ArtifactStore.from_settings(settings)
    store.write_json(REF, "breakdown", {"ok": True})
    url = file_url_for(
        settings, store, tenant_id=REF.tenant, event_id=REF.event_id, run_id=REF.run_id, status="file_ready"
    )
    assert url is not None and url.startswith("https://api.test/v1/files/")


class PresigningMemoryFileSystem(MemoryFileSystem):
    """Object storage cannot run here: a memory store that presigns the way s3fs does
    (``sign(path, expiration)`` returns a URL carrying the expiry)."""

    protocol: ClassVar[str | tuple[str, ...]] = ("presign-test",)
    signed: ClassVar[list[tuple[str, int]]] = []

    def sign(self, path: str, expiration: int = 100, **kwargs: Any) -> str:
        self.signed.append((self._strip_protocol(path), expiration))
        return f"https://bucket.example.com/{self._strip_protocol(path).lstrip('/')}?X-Expires={expiration}"


def test_an_object_store_gets_a_presigned_url_valid_for_the_link_ttl() -> None:
    fsspec.register_implementation("presign-test", PresigningMemoryFileSystem, clobber=True)
    settings = settings_for(f"presign-test://bucket-{time.monotonic_ns()}/filmroom", link_ttl_s=120)
    store = ArtifactStore.from_settings(settings)
    store.write_json(REF, "breakdown", {"ok": True})
    url = file_url(settings, store, run_of(RunStatus.file_ready))
    assert url is not None and url.startswith("https://bucket.example.com/") and url.endswith("X-Expires=120")
    assert PresigningMemoryFileSystem.signed[-1] == (
        PresigningMemoryFileSystem._strip_protocol(store.path(REF, "breakdown")),
        120,
    )
