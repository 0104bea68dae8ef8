"""Callback URL validation: what is refused with callback_invalid_url, at submit and at send time."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import httpx
import pytest

from api.webhooks.urls import check_callback_url
from infra.errors import CallbackInvalidUrl
from tests.fixtures.api import FakeResolver, sqlite_only

refused = pytest.raises(CallbackInvalidUrl)
ok = nullcontext()


@pytest.mark.parametrize(
    ("url", "allow", "outcome"),
    [
        ("https://hooks.example.com/filmroom", [], ok),
        ("http://hooks.example.com:8080/x?y=1", [], ok),
        ("https://v6.example.com/x", [], ok),
        ("https://93.184.216.34/x", [], ok),
        ("", [], refused),
        ("not a url", [], refused),
        ("hooks.example.com/x", [], refused),  # no scheme
        ("ftp://hooks.example.com/x", [], refused),
        ("javascript:alert(1)", [], refused),
        ("file:///etc/passwd", [], refused),
        ("https:///x", [], refused),  # no host
        ("https://hooks.example.com:70000/x", [], refused),  # bad port
        ("https://hooks.example.com/\nx", [], refused),
        ("https://nowhere.invalid/x", [], refused),  # does not resolve
        ("http://127.0.0.1:9000/x", [], refused),
        ("http://localhost/x", [], refused),
        ("http://[::1]/x", [], refused),
        ("http://[::ffff:127.0.0.1]/x", [], refused),
        ("http://0.0.0.0/x", [], refused),
        ("http://10.0.0.8/x", [], refused),
        ("http://172.16.5.4/x", [], refused),
        ("http://192.168.1.1/x", [], refused),
        ("http://100.64.0.1/x", [], refused),  # shared (CGNAT)
        ("http://169.254.169.254/latest/meta-data/", [], refused),
        ("http://[fd00:ec2::254]/x", [], refused),
        ("http://[fe80::1]/x", [], refused),
        ("http://224.0.0.1/x", [], refused),
        ("https://intranet.example.com/x", [], refused),
        ("https://mixed.example.com/x", [], refused),  # one private address is enough
        ("https://metadata.example.com/x", [], refused),
        ("http://127.0.0.1:9000/x", ["127.0.0.1"], ok),
        ("http://[::1]/x", ["::1"], ok),
        ("http://localhost/x", ["localhost"], ok),
        ("https://intranet.example.com/x", ["10.0.0.0/8"], ok),
        ("https://intranet.example.com/x", ["intranet.example.com"], ok),
        ("https://intranet.example.com/x", ["192.168.0.0/16"], refused),
        ("http://169.254.169.254/x", ["127.0.0.1"], refused),
    ],
)
def test_callback_urls_are_checked(
    url: str, allow: list[str], outcome: AbstractContextManager[object]
) -> None:
    with outcome:
        check_callback_url(url, allow_hosts=allow, resolve=FakeResolver())


@sqlite_only
def test_a_job_with_a_refused_callback_url_is_a_400_and_creates_nothing(api_client: httpx.Client) -> None:
    body = {
        "job": {"type": "breakdown", "videos": [{"url": "https://cdn.example.com/a.mp4"}], "sport": "soccer"},
        "webhooks": [{"url": "http://169.254.169.254/latest", "secret": "s", "events": ["job.success"]}],
    }
    response = api_client.post("/v1/jobs", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "callback_invalid_url"
    assert api_client.get("/v1/jobs").json() == []
