"""Client addresses in the one form every map key uses, and the host names
that tell which machine logged a line."""

from __future__ import annotations

import ipaddress

# The C module under `socket`: importing `socket` itself (it builds its
# enums) would cost every cron run about 2 ms.
from _socket import AF_INET, AF_INET6, inet_ntop, inet_pton
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# The first 12 bytes of IPv4-mapped (::ffff:a.b.c.d) and IPv4-compatible
# (::a.b.c.d) IPv6 addresses: the C library prints these in dotted form,
# `ipaddress` (whose form the maps use) does not.
_MAPPED_PREFIX = bytes(10) + b"\xff\xff"
_COMPATIBLE_PREFIX = bytes(12)

# What a syslog header's host field can hold, as pattern text (ASCII, so
# bytes patterns take it too). A host never holds a colon or brackets, so
# `pop3-login: Info: ...` (a server's own log file, no host) reads as a tag.
# The line head (rules.forms) and the configuration's `hosts` both use it.
HOST_NAME = r"[^\s:\[\]]{1,255}"


# A log repeats the same few thousand client addresses; parsing each once
# per run is enough. Bounded, because every address is attacker-chosen, and
# small: a full cache of 65,536 took 11 MB.
@lru_cache(maxsize=1 << 13)
def normalize_address(text: str) -> str | None:
    """The canonical text of an IP address, or None if `text` is not one.

    IPv4-mapped IPv6 (`::ffff:a.b.c.d`) becomes plain IPv4, since that is what
    the MTA sees as the client; IPv6 is lowercase and compressed, the only
    form Postfix looks up. Zone indices (`fe80::1%eth0`) are refused.

    The C library's inet_pton/inet_ntop (ten times faster than `ipaddress`)
    accept and print exactly what `ipaddress` does, except for the IPv4-mapped
    and IPv4-compatible forms, which `ipaddress` still decides.
    """
    if not text or len(text) > 45 or "%" in text:
        return None
    try:
        if ":" not in text:
            return inet_ntop(AF_INET, inet_pton(AF_INET, text))
        packed = inet_pton(AF_INET6, text)
    except (OSError, ValueError):
        return None
    if packed[:12] not in (_MAPPED_PREFIX, _COMPATIBLE_PREFIX):
        return inet_ntop(AF_INET6, packed)
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def is_canonical(text: str) -> bool:
    """True when `text` is an address exactly as `normalize_address` writes it.

    For reading our own lease file fast: `inet_pton` and `inet_ntop` instead
    of `ipaddress`, except for the rare forms the two disagree on.
    """
    try:
        if ":" not in text:
            return inet_ntop(AF_INET, inet_pton(AF_INET, text)) == text
        packed = inet_pton(AF_INET6, text)
    except (OSError, ValueError):
        return False
    if packed[:12] in (_MAPPED_PREFIX, _COMPATIBLE_PREFIX):
        return normalize_address(text) == text
    return inet_ntop(AF_INET6, packed) == text


@lru_cache(maxsize=1 << 10)
def is_special(address: str) -> bool:
    """An address no client can log in from: unspecified (and IPv4's `0.0.0.0/8`),
    the limited broadcast, multicast and link-local. Never granted.

    On the packed bytes: `ipaddress` took longer than all the rest of a
    login's merge. `address` is normalized (IPv4-mapped IPv6 is IPv4).
    """
    return _is_special_packed(packed_address(address))


def _is_special_packed(packed: bytes) -> bool:
    first = packed[0]
    if len(packed) == 4:
        # 0.0.0.0/8, 255.255.255.255, 224.0.0.0/4, 169.254.0.0/16
        return first == 0 or packed == _BROADCAST or first >> 4 == 14 or packed[:2] == _IPV4_LINK_LOCAL
    # ::, ff00::/8, fe80::/10
    return packed == _UNSPECIFIED_V6 or first == 0xFF or (first == 0xFE and packed[1] & 0xC0 == 0x80)


_BROADCAST = b"\xff\xff\xff\xff"
_IPV4_LINK_LOCAL = b"\xa9\xfe"
_UNSPECIFIED_V6 = bytes(16)


def packed_address(address: str) -> bytes:
    """The 4 or 16 bytes of a normalized address. Raises OSError for anything else."""
    if ":" in address:
        return inet_pton(AF_INET6, address)
    return inet_pton(AF_INET, address)


def sort_key(address: str) -> int:
    """IPv4 before IPv6, each in numeric order (of a normalized address).

    An int, not a (length, bytes) tuple: sorting 100,000 leases holds a key
    for each, and an IPv4 key then takes 32 bytes instead of 120.
    """
    # Every IPv6 key above every IPv4 one (which are below 2**32).
    if ":" in address:
        return int.from_bytes(inet_pton(AF_INET6, address)) + _ABOVE_IPV4
    return int.from_bytes(inet_pton(AF_INET, address))


_ABOVE_IPV4 = 1 << 32


def parse_network(text: str) -> Network:
    """A network or single address (`10.0.0.0/8`, `::1`). Raises ValueError."""
    return ipaddress.ip_network(text.strip(), strict=False)


@lru_cache(maxsize=64)
def _ranges(networks: tuple[Network, ...]) -> tuple[tuple[int, int, int], ...]:
    """Each network as (address length in bytes, network number, netmask)."""
    return tuple(
        (network.max_prefixlen // 8, int(network.network_address), int(network.netmask))
        for network in networks
    )


# The networks last asked about and their ranges: hashing a tuple of
# networks (for the cache above) cost more than the check itself, per login.
_last_ranges: list[Any] = [None, ()]


def is_ignored(address: str, networks: Iterable[Network]) -> bool:
    """Whether a normalized address lies in one of `networks`."""
    if networks is _last_ranges[0]:
        ranges: tuple[tuple[int, int, int], ...] = _last_ranges[1]
    else:
        ranges = _ranges(networks if isinstance(networks, tuple) else tuple(networks))
        if isinstance(networks, tuple):
            _last_ranges[:] = [networks, ranges]
    return _in_ranges(address, ranges)


def ignore_test(networks: Iterable[Network]) -> Callable[[str], bool]:
    """`is_ignored` for many addresses against the same networks, faster."""
    ranges = _ranges(tuple(networks))
    return lambda address: _in_ranges(address, ranges)


def refusal_test(networks: Iterable[Network]) -> Callable[[str], bool]:
    """`is_special(address) or is_ignored(address, networks)` for many
    addresses, each packed once: what every login costs when merged."""
    ranges = _ranges(tuple(networks))

    def refused(address: str) -> bool:
        packed = packed_address(address)
        return _is_special_packed(packed) or _packed_in_ranges(packed, ranges)

    return refused


def _in_ranges(address: str, ranges: tuple[tuple[int, int, int], ...]) -> bool:
    if not ranges:
        return False
    return _packed_in_ranges(packed_address(address), ranges)


def _packed_in_ranges(packed: bytes, ranges: tuple[tuple[int, int, int], ...]) -> bool:
    if not ranges:
        return False
    value = int.from_bytes(packed)
    length = len(packed)
    # A loop, not any(): the generator cost more than the test, per login.
    for size, number, mask in ranges:  # noqa: SIM110
        if size == length and value & mask == number:
            return True
    return False
