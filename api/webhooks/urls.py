"""Callback URL validation: refuses URLs that would make filmroom call into its own network (SSRF).

A callback URL must be ``http``/``https`` with a host, and every address its host resolves to must be
public. Loopback, private (RFC 1918, ULA), link-local, shared (CGNAT), multicast, reserved and
unspecified addresses are refused, and so are the cloud metadata endpoints (``169.254.169.254``,
``fd00:ec2::254``, ``100.100.100.200``), unless the host — by name, by address or by a CIDR —
is listed in ``settings.webhooks.allow_hosts`` (tests list ``127.0.0.1``).

The check runs at submit and again before every delivery attempt: a name that resolved to a public
address at submit may point somewhere else later (DNS rebinding). A small window remains between
that second check and httpx's own resolution; redirects are never followed.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

from infra.errors import CallbackInvalidUrl

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]
"""``(host, port) -> addresses``; raises ``OSError`` when the name does not resolve."""

MAX_URL_LENGTH = 2048
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)


def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (``socket.getaddrinfo``)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def _address(value: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(value.split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    return address


def is_public_address(address: IPAddress) -> bool:
    """Whether filmroom may call ``address`` without an allow-list entry."""
    return not (
        address in METADATA_ADDRESSES
        or not address.is_global
        or address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


class AllowList:
    """``settings.webhooks.allow_hosts``: host names (case-insensitive), addresses and CIDRs."""

    def __init__(self, entries: Sequence[str]) -> None:
        self.names: set[str] = set()
        self.networks: list[IPNetwork] = []
        for entry in entries:
            text = entry.strip().lower().strip("[]")
            if not text:
                continue
            try:
                self.networks.append(ipaddress.ip_network(text, strict=False))
            except ValueError:
                self.names.add(text.rstrip("."))

    def allows_name(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.names

    def allows_address(self, address: IPAddress) -> bool:
        return any(address.version == net.version and address in net for net in self.networks)


def check_callback_url(
    url: str, *, allow_hosts: Sequence[str] = (), resolve: Resolver = system_resolver
) -> list[str]:
    """The addresses ``url``'s host resolves to, or ``CallbackInvalidUrl`` saying why it is refused."""
    if not url or len(url) > MAX_URL_LENGTH:
        raise CallbackInvalidUrl(f"callback URL must be 1-{MAX_URL_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise CallbackInvalidUrl("callback URL must not contain whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise CallbackInvalidUrl(f"callback URL is malformed: {exc}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise CallbackInvalidUrl("callback URL must use http or https")
    host = parts.hostname
    if not host:
        raise CallbackInvalidUrl("callback URL has no host")
    port = port or (443 if parts.scheme.lower() == "https" else 80)
    allow = AllowList(allow_hosts)
    literal = _address(host)
    if literal is not None:
        addresses = [str(literal)]
    elif allow.allows_name(host):
        return []  # allow-listed by name: whatever it resolves to is the operator's choice
    else:
        try:
            addresses = resolve(host, port)
        except (OSError, UnicodeError):
            raise CallbackInvalidUrl(f"callback host {host!r} does not resolve") from None
        if not addresses:
            raise CallbackInvalidUrl(f"callback host {host!r} does not resolve")
    for text in addresses:
        address = _address(text)
        if address is None:
            raise CallbackInvalidUrl(f"callback host {host!r} resolved to an unusable address")
        if not is_public_address(address) and not allow.allows_address(address):
            raise CallbackInvalidUrl(
                f"callback host {host!r} resolves to a loopback, private, link-local or metadata "
                "address; add it to settings.webhooks.allow_hosts to allow it"
            )
    return addresses
