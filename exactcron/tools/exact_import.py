"""`import-exact`: an exactcron.toml from an Exact installation's exact.conf and exact-servers.conf.

Pure: text in, TOML text and warnings out; the caller reads the files.

Exact reads `NAME VALUE` lines (`#` starts a comment) and, from the file
`serverdefs` names, `<server NAME>` stanzas each holding `order` and
`match`: a POSIX extended regular expression searched anywhere in the whole
log line, whose first group is dropped and whose second and third are the
user and the address (or the address and the user, as `order` says).
Exact 1.2x had `match` and `order` in exact.conf itself, as a basic
regular expression (`\\(`, `\\|`).

Over 400 lines: a converter of Exact's whole configuration format, run once
by hand, never loaded by a cron run.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from exactcron.config import DEFAULT_STATE_DIR, DEFAULT_TIMEOUT
from exactcron.errors import ConfigError
from exactcron.rules.builtin import BUILTIN_RULES
from exactcron.rules.site import site_rule

ORDERS = ("username,address", "address,username")

# Exact's directives with no exactcron equivalent, and why not.
_NO_EQUIVALENT = {
    "user": "exactcron runs as the owner of state_dir (the cron job's user, exactcron)",
    "group": "the cron job's user reads the log through its groups (adm on Debian)",
    "pidfile": "exactcron is no daemon: cron (or the systemd timer) runs `exactcron update` every minute",
    "authtemp": "every map is written under a temporary name beside it and renamed",
    "dumpfile": "`exactcron show` (or `show --json`) lists the leases",
    "flush": "every update drops the expired leases",
    "suspicious": "a rotated log is found by its inode and the fingerprint of its first bytes",
    "logging": "errors go to stderr (cron mails them) and to log_file when set",
    "logfile": "set log_file (below) for a record of every run and an audit trail",
    "serverdefs": "its stanzas are converted below",
}
_POSIX_CLASSES = {
    "alpha": "A-Za-z",
    "digit": "0-9",
    "alnum": "A-Za-z0-9",
    "upper": "A-Z",
    "lower": "a-z",
    "space": " \\t\\n\\r\\f\\v",
    "blank": " \\t",
    "punct": "!-/:-@\\[-`{-~",
    "xdigit": "0-9A-Fa-f",
    "print": " -~",
    "graph": "!-~",
    "cntrl": "\\x00-\\x1f\\x7f",
}


@dataclass(frozen=True)
class Stanza:
    name: str
    order: str
    match: str
    line: int


@dataclass
class Conversion:
    toml: str
    warnings: list[str] = field(default_factory=list)


def directives(text: str) -> list[tuple[int, str, str]]:
    """exact.conf's `NAME VALUE` lines, as (line number, name, value)."""
    found = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = re.split(r"[ \t]+", line, maxsplit=1)
        found.append((number, parts[0], parts[1].strip() if len(parts) > 1 else ""))
    return found


def serverdefs_path(exact_conf: str) -> str | None:
    """The exact-servers.conf an exact.conf names, if any."""
    values = [value for _, name, value in directives(exact_conf) if name == "serverdefs" and value]
    return values[-1] if values else None


def parse_stanzas(text: str, source: str) -> list[Stanza]:
    """The `<server NAME>` ... `</server>` stanzas of an exact-servers.conf. Raises ConfigError."""
    stanzas = []
    current: dict[str, str] | None = None
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        opening = re.fullmatch(r"<\s*server\s+([^>]+)>", line)
        if opening:
            if current is not None:
                raise ConfigError(f"{source}:{number}: <server> inside <server {current['name']}>")
            current, start = {"name": opening.group(1).strip()}, number
            continue
        if re.fullmatch(r"<\s*/\s*server\s*>", line):
            if current is None:
                raise ConfigError(f"{source}:{number}: </server> without <server NAME>")
            if "match" not in current:
                raise ConfigError(f"{source}:{start}: <server {current['name']}> has no match")
            stanzas.append(Stanza(current["name"], current.get("order", ORDERS[0]), current["match"], start))
            current = None
            continue
        setting = re.fullmatch(r"(order|match)[ \t]+(.+)", line)
        if current is None or setting is None:
            raise ConfigError(f"{source}:{number}: expected <server NAME>, order, match or </server>")
        current[setting.group(1)] = setting.group(2).strip()
    if current is not None:
        raise ConfigError(f"{source}:{start}: <server {current['name']}> is not closed")
    return stanzas


def convert(
    exact_conf: str,
    exact_name: str,
    servers_conf: str | None = None,
    servers_name: str | None = None,
    state_dir: str = DEFAULT_STATE_DIR,
) -> Conversion:
    """The exactcron.toml for an Exact installation. Raises ConfigError when none can be made."""
    out = Conversion("")
    settings: dict[str, str] = {}
    comments: list[str] = []
    for number, name, value in directives(exact_conf):
        if name in settings and name != "serverdefs":
            out.warnings.append(
                f"{exact_name}:{number}: {name} given again; the last one counts, as in Exact"
            )
        settings[name] = value
        if name in _NO_EQUIVALENT:
            comments.append(f"# Exact: {name} {value}: {_NO_EQUIVALENT[name]}.")
            if name not in ("serverdefs", "logfile", "flush", "authtemp"):
                out.warnings.append(
                    f"{exact_name}:{number}: {name} has no equivalent: {_NO_EQUIVALENT[name]}"
                )
        elif name not in ("maillog", "server", "authtype", "authfile", "timeout", "match", "order"):
            comments.append(f"# Exact: {name} {value}: unknown to this converter; not carried over.")
            out.warnings.append(f"{exact_name}:{number}: unknown directive {name!r}; not carried over")

    stanzas = parse_stanzas(servers_conf, servers_name or "SERVERS_CONF") if servers_conf else []
    if "match" in settings:
        # Exact 1.2x: one rule in exact.conf itself, a basic regular expression.
        stanzas.append(
            Stanza("exact-match", settings.get("order", ORDERS[0]), _basic_to_extended(settings["match"]), 0)
        )
    lines = [
        f"# exactcron.toml converted by `exactcron import-exact` from Exact's {exact_name}"
        + (f" and {servers_name}" if servers_conf else "")
        + ".",
        "# Check it with `exactcron check`, and each rule with `exactcron check LOG --server NAME`.",
        "",
        f"state_dir = {_string(state_dir)}",
        f'timeout = "{_timeout(settings, exact_name, out)}"',
    ]
    if settings.get("logging") == "internal":
        lines.append('log_file = "/var/log/exactcron/exactcron.log"')
    lines += ["", *comments] if comments else []

    server = settings.get("server") or ("exact-match" if "match" in settings else "uw-imap")
    if "server" not in settings and "match" not in settings:
        out.warnings.append(f"{exact_name}: no server; Exact's default, uw-imap, is used")
    rules, rule_names = _rules(stanzas, servers_name or exact_name, out)
    if server not in BUILTIN_RULES and server not in rule_names:
        raise ConfigError(
            f"{exact_name}: server {server!r} is neither a built-in rule nor a stanza of "
            + (servers_name or "the serverdefs file (give it as SERVERS_CONF)")
        )
    server = rule_names.get(server, server)
    maillog = settings.get("maillog") or "/var/log/maillog"
    lines += ["", "[[source]]", f"path = {_string(maillog)}", f"server = {_string(server)}"]
    if "maillog" not in settings:
        out.warnings.append(f"{exact_name}: no maillog; Exact's default, /var/log/maillog, is used")
    lines += ["", *_map(settings, exact_name, out)]
    lines += rules
    out.toml = "\n".join(lines).rstrip("\n") + "\n"
    return out


def _timeout(settings: dict[str, str], exact_name: str, out: Conversion) -> str:
    value = settings.get("timeout", "1800")
    if not re.fullmatch(r"[0-9]{1,8}", value) or not 0 < int(value) <= 366 * 86400:
        out.warnings.append(
            f"{exact_name}: timeout {value!r} is not a number of seconds; {DEFAULT_TIMEOUT} is used"
        )
        return DEFAULT_TIMEOUT
    seconds = int(value)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _map(settings: dict[str, str], exact_name: str, out: Conversion) -> list[str]:
    authtype = settings.get("authtype", "text")
    authfile = settings.get("authfile") or "/var/state/exact/relay"
    if authtype == "db":
        out.warnings.append(
            f"{exact_name}: authtype db: written as a Postfix hash map (postmap builds {authfile}.db); "
            'an Exim net-dbm; lookup needs mta = "exim" and a host list file instead'
        )
        return [
            "# Exact: authtype db: a Berkeley DB relay file, read by Postfix (hash:) or Exim (net-dbm;).",
            '# exactcron writes the text and has postmap build it; for Exim, set mta = "exim" and',
            "# name the file in a host list (hostlist relay_from_hosts = <; 127.0.0.1 ; FILE).",
            "[[map]]",
            'mta = "postfix"',
            f"path = {_string(authfile)}",
            'type = "hash"',
        ]
    if authtype != "text":
        out.warnings.append(f"{exact_name}: authtype {authtype!r} is neither db nor text; text is used")
    return [
        "# Exact: authtype text: one address a line, as Exim's host lists and Sendmail's F{POPAuth}",
        "# class file read it; exactcron's exim map is the same text.",
        "[[map]]",
        'mta = "exim"',
        f"path = {_string(authfile)}",
    ]


def _rules(stanzas: list[Stanza], source: str, out: Conversion) -> tuple[list[str], dict[str, str]]:
    """[rule.NAME] tables for the stanzas, and each stanza's name -> the rule that stands for it."""
    lines: list[str] = []
    names: dict[str, str] = {}
    for stanza in stanzas:
        where = f"{source}:{stanza.line}" if stanza.line else source
        if stanza.name in BUILTIN_RULES:
            names[stanza.name] = stanza.name
            lines += [
                "",
                f"# Exact: <server {stanza.name}>: exactcron's built-in rule {stanza.name} reads every",
                "# form this server logs (anchored, with its syslog tag); Exact's match was:",
                f"#   {_printable(stanza.match)}",
            ]
            continue
        rule_name = re.sub(r"[^A-Za-z0-9_.\-]", "-", stanza.name)[:64] or "exact"
        program = re.sub(r"[^A-Za-z0-9_.\-/]", "", stanza.name)[:64] or "exact"
        if stanza.order not in ORDERS:
            out.warnings.append(
                f"{where}: <server {stanza.name}>: order {stanza.order!r} is not valid; skipped"
            )
            lines += [
                "",
                f"# Exact: <server {stanza.name}>: skipped, order {_printable(stanza.order)} is not valid.",
            ]
            continue
        try:
            pattern, caveats = extended_to_python(stanza.match, stanza.order)
            site_rule(rule_name, program, pattern)
        except ValueError as error:
            out.warnings.append(
                f"{where}: <server {stanza.name}>: match cannot be converted ({error}); skipped"
            )
            lines += [
                "",
                f"# Exact: <server {stanza.name}>: skipped, its match cannot be converted: {error}.",
            ]
            continue
        names[stanza.name] = rule_name
        out.warnings.append(
            f"{where}: <server {stanza.name}> became [rule.{rule_name}] with program = {program!r}: "
            "Exact never named the syslog tag; check that the server logs under it"
        )
        for caveat in caveats:
            out.warnings.append(f"{where}: <server {stanza.name}>: {caveat}")
        lines += [
            "",
            f"# Exact: <server {stanza.name}> (order {stanza.order}):",
            f"#   match {_printable(stanza.match)}",
            f"# Exact searched the whole line; this rule matches the message after the tag {program}[PID]:",
            "# check that tag against your log (`exactcron check LOG --server " + rule_name + "`).",
            *(f"# Note: {caveat}" for caveat in caveats),
            f"[rule.{rule_name}]",
            f"program = {_string(program)}",
            f"match = {_literal(pattern)}",
        ]
    return lines, names


def extended_to_python(expression: str, order: str) -> tuple[str, list[str]]:
    """A POSIX extended regular expression, as Exact used it, as a Python one for a site rule.

    Group 2 and 3 become `user` and `ip` (as `order` says), every other
    group a non-capturing one; Exact searched anywhere in the line, so the
    result is unanchored at both ends. Returns the pattern and caveats.
    Raises ValueError.
    """
    names = {2: "user", 3: "ip"} if order == ORDERS[0] else {2: "ip", 3: "user"}
    caveats = []
    out: list[str] = []
    group = 0
    position = 0
    length = len(expression)
    while position < length:
        char = expression[position]
        if char == "\\":
            if position + 1 >= length:
                raise ValueError("a trailing backslash")
            escaped = expression[position + 1]
            out.append({"<": r"\b", ">": r"\b"}.get(escaped, "\\" + escaped))
            position += 2
        elif char == "[":
            end, converted = _bracket(expression, position)
            out.append(converted)
            position = end
        elif char == "(":
            group += 1
            out.append(f"(?P<{names[group]}>" if group in names else "(?:")
            position += 1
        elif char == "^":
            if position == 0:
                caveats.append(
                    "its match was anchored at the start of the line (the syslog stamp); here it "
                    "may match anywhere in the message"
                )
                position += 1
                continue
            out.append("^")
            position += 1
        else:
            out.append(char)
            position += 1
    if group < 3:
        raise ValueError(f"it has {group} groups; Exact needs three (a dropped one, user, address)")
    return "(?:.*?)" + "".join(out) + "(?:.*)", caveats


def _bracket(expression: str, start: int) -> tuple[int, str]:
    """A bracket expression from `start` (at `[`): where it ends, and it in Python's syntax.

    In POSIX a backslash inside brackets is itself; `]` first is a member."""
    position = start + 1
    out = ["["]
    if position < len(expression) and expression[position] == "^":
        out.append("^")
        position += 1
    first = True
    while position < len(expression):
        char = expression[position]
        if char == "]" and not first:
            out.append("]")
            return position + 1, "".join(out)
        if expression.startswith("[:", position):
            end = expression.find(":]", position + 2)
            name = expression[position + 2 : end] if end > 0 else ""
            if name not in _POSIX_CLASSES:
                raise ValueError(f"unknown character class [:{name}:]")
            out.append(_POSIX_CLASSES[name])
            position = end + 2
        elif char in "\\[]":
            out.append("\\" + char)
            position += 1
        else:
            out.append(char)
            position += 1
        first = False
    raise ValueError("a bracket expression that is not closed")


def _basic_to_extended(expression: str) -> str:
    """A POSIX basic regular expression (GNU's, with \\| and \\+) in extended syntax."""
    out = []
    position = 0
    while position < len(expression):
        char = expression[position]
        if char == "\\" and position + 1 < len(expression):
            escaped = expression[position + 1]
            out.append(escaped if escaped in "(){}|+?" else "\\" + escaped)
            position += 2
        elif char in "(){}|+?":
            out.append("\\" + char)
            position += 1
        elif char == "[":
            end = expression.find("]", position + 2)
            end = len(expression) if end < 0 else end + 1
            out.append(expression[position:end])
            position = end
        else:
            out.append(char)
            position += 1
    return "".join(out)


def _string(value: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(value)


def _literal(value: str) -> str:
    """A TOML literal string when the text allows one (a regular expression reads better so)."""
    if "'" in value or any(ord(char) < 32 or ord(char) == 127 for char in value):
        return _string(value)
    return f"'{value}'"


def _printable(value: str) -> str:
    return "".join(char if char.isprintable() else f"\\x{ord(char):02x}" for char in value)
