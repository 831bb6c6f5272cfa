"""The grant decision: whether a login a line states grants relay, and if not, why.

Every reason a login grants nothing is named here once (`Refusal`), and
decided in two steps, each in one place:

- `line_refusal`, where every parsing path ends (LineParser's fast path, its
  general reader, the text path, and so `check` too): what the line itself
  says (no address, an anonymous user, the server's own address). A host
  not in the source's `hosts` is the parser's own test, as it remembers
  each host field's verdict.
- `Grant.verdict` in leases.py, which needs the clock: a stamp ahead of it,
  a special or ignored address, a login older than now - timeout (to the
  second, as the lease table keeps leases). The lease table and `check`
  both call it, so the two never disagree about a login.
"""

from __future__ import annotations

from enum import Enum

from exactcron.addresses import normalize_address


class Refusal(Enum):
    """Why a login grants nothing."""

    NO_ADDRESS = "no address"
    ANONYMOUS = "an anonymous login"
    OWN_ADDRESS = "from the server's own address"
    OTHER_HOST = "from a host not in `hosts`"
    AHEAD = "stamped ahead of the clock"
    SPECIAL = "a special address"
    IGNORED = "in `ignore`"
    TOO_OLD = "logged before now - timeout"


def is_anonymous(user: str) -> bool:
    """True for the user of an anonymous login, which authenticates nobody.

    `anonymous` in any case, with or without a domain (Cyrus's
    is_userid_anonymous; Dovecot's default auth_anonymous_username).
    """
    # The text before the first `@` or `%`.
    return user.partition("@")[0].partition("%")[0].lower() == "anonymous"


def line_refusal(user: str | None, address: str | None, local: str | None = None) -> Refusal | None:
    """None when a success line's fields may grant; else why not.

    `address` is the client's, normalized (None: the field held no
    address); `local` the server's own as logged, when the line names it.
    """
    if address is None:
        return Refusal.NO_ADDRESS
    # Only an `a` lowercases to the first letter of `anonymous`.
    if user and user[0] in "aA" and is_anonymous(user):
        return Refusal.ANONYMOUS
    # A login from the server's own address (webmail, a local proxy) is not a
    # client of this host; a local address that is none, no line the server wrote.
    if local is not None and normalize_address(local) in (None, address):
        return Refusal.OWN_ADDRESS
    return None
