"""Where footage comes from: local paths under allowed roots, and http(s) downloads with limits."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from infra import errors
from infra.settings import IngestSettings
from tasks.ingest import Fetcher, Source, ingest, resolve_source

BIG = 5 * 1024 * 1024


class _Handler(BaseHTTPRequestHandler):
    payload = b""

    def do_GET(self) -> None:
        if self.path == "/missing.mp4":
            self.send_response(404)
            self.end_headers()
            return
        if self.path == "/huge.mp4":
            # Claims a huge size, like a multi-gigabyte file would.
            self.send_response(200)
            self.send_header("Content-Length", str(50 * 1024**3))
            self.end_headers()
            return
        if self.path == "/endless.mp4":
            # No Content-Length: only counting the bytes can stop it.
            self.send_response(200)
            self.end_headers()
            try:
                for _ in range(BIG // 65536 + 10):
                    self.wfile.write(b"\0" * 65536)
            except (BrokenPipeError, ConnectionResetError):
                pass
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.payload)))
        self.end_headers()
        self.wfile.write(self.payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _settings(tmp_path: Path, **overrides: object) -> IngestSettings:
    return IngestSettings(allowed_roots=[str(tmp_path / "footage")], **overrides)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_local_path_outside_allowed_roots_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.mp4"
    outside.write_bytes(b"x")
    with pytest.raises(errors.VideoInvalidUrl, match="outside the allowed"):
        resolve_source(Source(uri=str(outside)), _settings(tmp_path), None)


def test_path_escaping_a_root_with_dotdot_is_refused(tmp_path: Path) -> None:
    (tmp_path / "footage").mkdir()
    (tmp_path / "secret.mp4").write_bytes(b"x")
    sneaky = tmp_path / "footage" / ".." / "secret.mp4"
    with pytest.raises(errors.VideoInvalidUrl):
        resolve_source(Source(uri=str(sneaky)), _settings(tmp_path), None)


def test_missing_local_file_is_missing_videos(tmp_path: Path) -> None:
    (tmp_path / "footage").mkdir()
    with pytest.raises(errors.MissingVideos, match="does not exist"):
        resolve_source(Source(uri=str(tmp_path / "footage" / "nope.mp4")), _settings(tmp_path), None)


def test_event_without_sources_is_missing_videos(tmp_path: Path) -> None:
    with pytest.raises(errors.MissingVideos):
        ingest([], _settings(tmp_path), chunk_s=10, overlap_s=1)


@pytest.mark.parametrize(
    "uri",
    ["ftp://example.com/clip.mp4", "http://", "s3x://bucket/clip.mp4", "gopher://x/y"],
)
def test_malformed_or_unsupported_urls_are_invalid(tmp_path: Path, uri: str) -> None:
    with pytest.raises(errors.VideoInvalidUrl):
        resolve_source(Source(uri=uri), _settings(tmp_path), Fetcher(_settings(tmp_path), tmp_path / "dl"))


def test_unreachable_url_is_video_invalid_url(tmp_path: Path) -> None:
    fetcher = Fetcher(_settings(tmp_path), tmp_path / "dl")
    url = f"http://127.0.0.1:{_free_port()}/clip.mp4"
    with pytest.raises(errors.VideoInvalidUrl, match="could not be downloaded"):
        resolve_source(Source(uri=url), _settings(tmp_path), fetcher)


def test_http_error_is_video_invalid_url(tmp_path: Path, http_server: str) -> None:
    fetcher = Fetcher(_settings(tmp_path), tmp_path / "dl")
    with pytest.raises(errors.VideoInvalidUrl, match="HTTP 404"):
        fetcher.fetch(f"{http_server}/missing.mp4")


def test_huge_declared_download_is_refused_before_reading(tmp_path: Path, http_server: str) -> None:
    fetcher = Fetcher(_settings(tmp_path, max_download_bytes=BIG), tmp_path / "dl")
    with pytest.raises(errors.VideoTooLong, match="download limit"):
        fetcher.fetch(f"{http_server}/huge.mp4")
    assert list((tmp_path / "dl").iterdir()) == []


def test_download_without_length_stops_at_the_limit_and_leaves_nothing(
    tmp_path: Path, http_server: str
) -> None:
    fetcher = Fetcher(_settings(tmp_path, max_download_bytes=BIG), tmp_path / "dl")
    with pytest.raises(errors.VideoTooLong, match="exceeds the download limit"):
        fetcher.fetch(f"{http_server}/endless.mp4")
    assert list((tmp_path / "dl").iterdir()) == []


def test_download_lands_atomically_under_the_download_dir(tmp_path: Path, http_server: str) -> None:
    _Handler.payload = b"0123456789" * 1000
    fetcher = Fetcher(_settings(tmp_path), tmp_path / "dl")
    path = fetcher.fetch(f"{http_server}/clip.mp4")
    assert path.read_bytes() == _Handler.payload
    assert path.name.endswith("-clip.mp4")
    assert [p.name for p in (tmp_path / "dl").iterdir()] == [path.name]
