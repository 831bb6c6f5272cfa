"""`ignore = ["mynetworks"]`: the networks Postfix trusts, never granted a lease.

Postfix relays for them already; a lease for one would only cost a map
entry and hide who really relies on POP-before-SMTP. Read with
`postconf -h mynetworks` at each run (postconf itself honours MAIL_CONFIG),
so that a change to main.cf counts without touching exactcron's
configuration. What cannot be turned into networks (a `type:table` lookup,
a host name, a `!` exception) is left out with a warning: leaving a trusted
network out only means a lease may be granted to it, which Postfix did not
need; an exception is not applied, so the networks around it stay ignored.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable

from exactcron.addresses import Network, parse_network
from exactcron.config import Config
from exactcron.logs import log
from exactcron.records import replace

# Postfix reads a /file entry's patterns the same way, and so may a file name one.
_MAX_FILE_DEPTH = 4
_MAX_FILE_BYTES = 1 << 20
_SEPARATORS = re.compile(r"[\s,]+")
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def with_postfix_networks(config: Config) -> Config:
    """`config` with the networks Postfix trusts added to `ignore`. Raises MapBuildError (69)
    when postconf cannot be run."""
    if not config.ignore_mynetworks:
        return config
    from exactcron.outputs.maps import run_tool

    text = run_tool(
        ["postconf", "-h", "mynetworks"],
        "postconf",
        'ignore = ["mynetworks"] asks Postfix\'s postconf; install postfix, or take "mynetworks" out of ignore',
    )
    networks, skipped = parse_mynetworks(text, _read_file)
    for entry, reason in dict(skipped).items():
        log.warning("ignore: mynetworks entry %r left out: %s", entry, reason)
    return replace(config, ignore=tuple(dict.fromkeys(config.ignore + networks)))


def parse_mynetworks(
    text: str, read_file: Callable[[str], str], depth: int = 0
) -> tuple[tuple[Network, ...], list[tuple[str, str]]]:
    """The networks of a mynetworks value, and the entries left out with why.

    `read_file` gives a `/file` entry's text (raises OSError). IPv6 may be
    bracketed (`[::1]/128`), as Postfix writes it; an IPv4-mapped network
    (`[::ffff:127.0.0.0]/104`) counts as the IPv4 network it maps, since the
    maps key such clients by their IPv4 address.
    """
    networks: list[Network] = []
    skipped: list[tuple[str, str]] = []
    for line in text.splitlines():
        # Comments only in files, but a # never starts a pattern anyway.
        line = line.split("#", 1)[0] if depth else line
        for entry in _SEPARATORS.split(line):
            if not entry:
                continue
            if entry.startswith("!"):
                skipped.append((entry, "exceptions are not applied (the networks around it stay ignored)"))
            elif entry.startswith("/"):
                if depth >= _MAX_FILE_DEPTH:
                    skipped.append((entry, "files nested too deep"))
                    continue
                try:
                    contents = read_file(entry)
                except OSError as error:
                    skipped.append((entry, f"cannot read: {error.strerror or error}"))
                    continue
                found, left_out = parse_mynetworks(contents, read_file, depth + 1)
                networks.extend(found)
                skipped.extend(left_out)
            else:
                network = _network(entry)
                if network is not None:
                    networks.extend(_as_clients(network))
                elif ":" in entry and not entry.startswith("["):
                    skipped.append((entry, "a lookup table cannot be listed"))
                else:
                    skipped.append((entry, "not an address or network"))
    return tuple(networks), skipped


def _network(entry: str) -> Network | None:
    bare = re.sub(r"^\[([^]]*)\]", r"\1", entry)
    try:
        return parse_network(bare)
    except ValueError:
        return None


def _as_clients(network: Network) -> list[Network]:
    """The network as client addresses are keyed: mapped IPv4 as IPv4."""
    if not isinstance(network, ipaddress.IPv6Network) or not network.overlaps(_MAPPED):
        return [network]
    if network.subnet_of(_MAPPED):
        start = network.network_address.ipv4_mapped
        assert start is not None
        return [ipaddress.IPv4Network(f"{start}/{network.prefixlen - 96}", strict=False)]
    # Wider than the mapped block: it holds every IPv4 client too.
    return [network, ipaddress.IPv4Network("0.0.0.0/0")]


def _read_file(name: str) -> str:
    with open(name, "rb") as stream:
        return stream.read(_MAX_FILE_BYTES).decode("utf-8", "replace")
