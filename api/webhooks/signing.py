"""Webhook signatures: GitHub's ``X-Hub-Signature-256`` and the Standard Webhooks headers.

Both sign the exact bytes that are sent, with the subscription's secret (a tenant-wide subscription
without one uses ``settings.webhooks.signing_secret``).

* **GitHub** (jobs-api.md): ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(key=secret, msg=body)>``.
* **Standard Webhooks** (standardwebhooks.com): ``webhook-id`` (the delivery id, the same on every retry,
  so receivers can drop duplicates), ``webhook-timestamp`` (Unix seconds of this attempt, so they can
  refuse replays) and ``webhook-signature: v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>``.
  The spec wants the key as a base64 secret with a ``whsec_`` prefix; filmroom's key is the UTF-8 bytes
  of the same secret, so a receiver derives it as::

      "whsec_" + base64.b64encode(secret.encode()).decode()

  and passes that to any Standard Webhooks library (``standardwebhooks.Webhook(...).verify``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac

GITHUB_HEADER = "X-Hub-Signature-256"


def github_signature(secret: str, body: bytes) -> str:
    """``sha256=<hex>``: GitHub's X-Hub-Signature-256 of ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def standard_webhooks_secret(secret: str) -> str:
    """The ``whsec_`` form of ``secret`` that Standard Webhooks libraries take (see the module doc)."""
    return "whsec_" + base64.b64encode(secret.encode()).decode()


def standard_webhooks_signature(secret: str, *, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64>``: the Standard Webhooks signature of one attempt."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_headers(secret: str, *, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Every signature header of one delivery attempt."""
    return {
        GITHUB_HEADER: github_signature(secret, body),
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": standard_webhooks_signature(
            secret, msg_id=msg_id, timestamp=timestamp, body=body
        ),
    }
