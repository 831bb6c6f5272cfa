"""Client addresses in the one form every map key uses."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def normalize_address(text: str) -> str | None:
    """The canonical text of an IP address, or None if `text` is not one.

    IPv4-mapped IPv6 (`::ffff:a.b.c.d`) becomes plain IPv4, since that is what
    the MTA sees as the client; IPv6 is lowercase and compressed, the only
    form Postfix looks up. Zone indices (`fe80::1%eth0`) are refused.
    """
    if not text or len(text) > 45 or "%" in text:
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def sort_key(address: str) -> tuple[int, int]:
    """IPv4 before IPv6, each in numeric order."""
    parsed = ipaddress.ip_address(address)
    return (parsed.version, int(parsed))


def parse_network(text: str) -> Network:
    """A network or single address (`10.0.0.0/8`, `::1`). Raises ValueError."""
    return ipaddress.ip_network(text.strip(), strict=False)


def is_ignored(address: str, networks: Iterable[Network]) -> bool:
    parsed = ipaddress.ip_address(address)
    return any(parsed.version == network.version and parsed in network for network in networks)
