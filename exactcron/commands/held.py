"""A run's part in `hold_while_connected`: the sessions each source read, their
leases extended through the store, and what is saved beside the checkpoints.

The rules are sessions.py's; this module only sequences them for
update.py. Imported only when a source sets the key.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from exactcron.config import Config, SourceConfig
from exactcron.errors import ExactcronError
from exactcron.model import Lease
from exactcron.rules.sessions import SessionEnded, SessionOpened, SessionParser
from exactcron.sessions import (
    SESSIONS_KEY,
    Extension,
    Session,
    SessionBook,
    extensions,
    sessions_from_json,
    sessions_to_json,
    took,
)
from exactcron.stores.base import LeaseStore
from exactcron.timestamps import TimestampParser


def session_parser(
    source: SourceConfig,
    saved: dict[str, Any] | None,
    timestamps: TimestampParser,
    now: datetime,
    timeout: timedelta,
    count_lines: bool,
    pairing_state: object = None,
) -> tuple[SessionParser, SessionBook]:
    """A parser that tells the source's session book what it reads, and that book
    (the sessions its checkpoint held, if any)."""
    book = SessionBook(
        OrderedDict(sessions_from_json((saved or {}).get(SESSIONS_KEY), now, source.session_max))
    )

    def noted(event: SessionOpened | SessionEnded) -> None:
        if isinstance(event, SessionOpened):
            book.opened(event.session, event.login, now, timeout)
        else:
            book.closed(event.session, event.time, event.who)

    parser = SessionParser(
        source.rules,
        timestamps,
        source.hosts,
        count_lines=count_lines,
        pairing_state=pairing_state,
        noted=noted,
    )
    return parser, book


def hold_sessions(
    config: Config,
    store: LeaseStore,
    now: datetime,
    read: Mapping[str, tuple[SessionBook | None, bool]],
    saved: dict[str, dict[str, Any]],
    checkpoints: dict[str, dict[str, Any]],
    errors: list[ExactcronError],
) -> dict[str, dict[str, Any]]:
    """Extend the leases the sources' open sessions hold (`read`: per source
    key, the sessions read this run, None when the source was not read, and
    whether its reading stopped short); the checkpoints, each
    holding its source's open sessions (a source not read this run keeps
    those it had, unextended; one refused for `written_by` keeps none)."""
    result = dict(checkpoints)
    in_force: dict[str, Lease] | None = None
    planned: list[tuple[str, Extension]] = []
    open_by_source: dict[str, dict[str, Session]] = {}
    for source in config.sources:
        if not source.hold_while_connected:
            continue
        key = str(source.path)
        document = result.get(key)
        if document is None:
            continue
        book, stopped = read.get(key, (None, False))
        if book is None:
            # Not read (an error, the deadline): its sessions wait, unextended.
            kept = [] if document.get("refused") else (saved.get(key) or {}).get(SESSIONS_KEY)
            result[key] = _with_sessions(document, kept)
            continue
        if not book.open and not book.ended:
            result[key] = _with_sessions(document, None)
            continue
        if in_force is None:
            try:
                in_force = {lease.address: lease for lease in store.snapshot(now).leases}
            except ExactcronError as error:
                errors.append(error)
                in_force = {}
        extending, still_open = extensions(book, in_force, now, config.timeout, source.session_max)
        if stopped:
            # Read only in part: an end may be in what is left; nothing open is extended now.
            extending = [each for each in extending if each.session_id is None]
            still_open = dict(book.open)
        planned.extend((key, each) for each in extending)
        open_by_source[key] = still_open
    if planned and in_force is not None:
        refused = set(_refused(store, planned, in_force, now, config, errors))
        for key, each in planned:
            still_open = open_by_source[key]
            if each.session_id is None or each.session_id not in still_open:
                continue
            if (key, each.session_id) in refused:
                # Refused (a flush since it last held, `[guard]`): held no more, ever.
                del still_open[each.session_id]
            else:
                still_open[each.session_id] = still_open[each.session_id]._replace(held=each.login.second)
    for key, still_open in open_by_source.items():
        result[key] = _with_sessions(result[key], sessions_to_json(still_open))
    return result


def _refused(
    store: LeaseStore,
    planned: list[tuple[str, Extension]],
    in_force: dict[str, Lease],
    now: datetime,
    config: Config,
    errors: list[ExactcronError],
) -> list[tuple[str, str]]:
    """Merge the extensions; the open sessions (source key, ID) whose extension
    the store refused (a flush after the session's login, `[guard]`).

    Merged in rounds, at most one per address each, its sessions oldest
    login first: whether each one took is then told by the addresses the
    merge changed, and a session logged in before a flush is tried (and
    refused) before any later one can extend the same lease.
    """
    by_address: dict[str, list[tuple[str, Extension]]] = {}
    for key, each in sorted(planned, key=lambda item: item[1].login.earliest or item[1].login.time):
        by_address.setdefault(each.login.address, []).append((key, each))
    view = dict(in_force)
    refused: list[tuple[str, str]] = []
    depth = max(len(each) for each in by_address.values())
    for index in range(depth):
        round_ = [items[index] for items in by_address.values() if len(items) > index]
        try:
            changed = set(store.merge([each.login for _, each in round_], now, config.timeout, config.ignore))
        except ExactcronError as error:
            errors.append(error)
            return [(key, each.session_id) for key, each in planned if each.session_id is not None]
        # The guard's verdicts on extensions: the lease's end says it; audited nowhere.
        store.verdicts()
        for key, each in round_:
            login = each.login
            before = view.get(login.address)
            if before is None or not took(login, before, changed, config.timeout):
                if each.session_id is not None:
                    refused.append((key, each.session_id))
            elif login.address in changed:
                view[login.address] = Lease(
                    login.address, login.user, login.second, login.second + config.timeout, login.server
                )
    return refused


def _with_sessions(document: dict[str, Any], sessions: object) -> dict[str, Any]:
    updated = {name: value for name, value in document.items() if name != SESSIONS_KEY}
    if sessions:
        updated[SESSIONS_KEY] = sessions
    return updated
