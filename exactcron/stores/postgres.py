"""The shared lease store: PostgreSQL, for many POP/IMAP hosts and MTAs.

The lease rules stay in leases.py: every write transaction first locks the
one row of `SCHEMA.meta` (so writers on all hosts take turns and none works
from a stale read), loads the rows it touches into a LeaseTable, applies the
same merge, flush or add the lease file gets, and writes back what changed.
A flush leaves a tombstone row that every login logged before it meets,
whichever host reads that login and whenever. `meta.changes` counts the
writes that changed a lease, so a quiet run asks one cheap question.

Hosts with different timeouts share the rules of the lease file: each run
records its host's timeout in `SCHEMA.host`; a lease ends at its login's time
plus the timeout of the host that granted it, so a lowered timeout shortens
the leases there (and in the `relay` view) at that host's next run; a flush
record is kept as long as the longest timeout of a host seen lately. When a
flush record is deleted all the same (a host that comes back after aging
out, or a new one with a longer timeout), `meta.flushes_forgotten` keeps its
time: a login logged at or before it grants nothing, so no forgotten flush is
ever undone. Text no column can hold (NUL, lone surrogates) is stored
escaped (`storable`), never refused.

What this host last read is kept in `store-cache.json` (the lease file's
format): when the database cannot be reached, the maps are rewritten from it
without the expired leases, and never with anything more.

Over 400 lines: the schema and its upgrade SQL, the connection's failure
handling and the store's transactions, read together against the schema.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from exactcron import faults
from exactcron.addresses import Network, ignore_test, is_canonical, refusal_test, sort_key
from exactcron.config import GuardConfig, StoreConfig
from exactcron.errors import ConfigError, StoreUnavailableError
from exactcron.guard import MAX_ADDRESSES, REASONS, GuardState, Verdict, user_key
from exactcron.leases import LatestLogins, LeaseTable, believed_login, flush_time
from exactcron.logs import log
from exactcron.model import MANUAL, Lease, Login, Snapshot
from exactcron.stores.file import FileLeaseStore
from exactcron.stores.local import LocalState

if TYPE_CHECKING:
    import psycopg


CACHE_FILE = "store-cache.json"
SCHEMA_VERSION = 3
# A host that has not run for this long no longer keeps flush records alive.
HOST_FORGOTTEN_AFTER = timedelta(days=7)
# Without an answer for this long, the database counts as unreachable.
CONNECT_TIMEOUT_SECONDS = 10
STATEMENT_TIMEOUT_MS = 60_000
# `status` warns when the host's clock and the database's differ by more.
CLOCK_SKEW_WARNING = timedelta(minutes=1)
# Rows read from the database at a time.
_READ_BATCH = 4096
# Connection parameters a store URL may override.
_DEFAULTS = {
    "connect_timeout": str(CONNECT_TIMEOUT_SECONDS),
    "application_name": "exactcron",
    # A database that stops answering mid-run (a cable, a firewall) ends the
    # run instead of holding it forever.
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    "tcp_user_timeout": str(CONNECT_TIMEOUT_SECONDS * 1000),
    "options": f"-c TimeZone=UTC -c statement_timeout={STATEMENT_TIMEOUT_MS}",
}


def migrations(schema: str) -> tuple[str, ...]:
    """The SQL that brings the schema from version N to N + 1, for each N from 0."""
    return (
        f"""CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {schema}.schema_version (version integer NOT NULL);
CREATE TABLE IF NOT EXISTS {schema}.meta (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    store_id uuid NOT NULL DEFAULT gen_random_uuid(),
    changes bigint NOT NULL DEFAULT 0,
    flushed_all timestamptz
);
INSERT INTO {schema}.meta (one) VALUES (true) ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS {schema}.lease (
    address text PRIMARY KEY,
    username text,
    last_login timestamptz NOT NULL,
    expires timestamptz NOT NULL,
    server text
);
CREATE INDEX IF NOT EXISTS lease_expires ON {schema}.lease (expires);
CREATE TABLE IF NOT EXISTS {schema}.flush (
    address text PRIMARY KEY,
    flushed timestamptz NOT NULL
);
CREATE OR REPLACE VIEW {schema}.relay AS
    SELECT address FROM {schema}.lease WHERE expires > now();
""",
        # 2: each host's timeout, who granted a lease, and the flushes forgotten.
        f"""CREATE TABLE IF NOT EXISTS {schema}.host (
    name text PRIMARY KEY,
    timeout interval NOT NULL,
    seen timestamptz NOT NULL
);
ALTER TABLE {schema}.lease ADD COLUMN IF NOT EXISTS host text;
ALTER TABLE {schema}.meta ADD COLUMN IF NOT EXISTS flushes_forgotten timestamptz;
DO $$ DECLARE granted record; BEGIN
    FOR granted IN SELECT a.grantee::regrole AS role, a.privilege_type AS privilege
        FROM pg_class c, aclexplode(c.relacl) a
        WHERE c.oid = '{schema}.lease'::regclass AND a.grantee <> 0 AND a.grantee <> c.relowner
    LOOP
        EXECUTE format('GRANT %s ON {schema}.host TO %s', granted.privilege, granted.role);
    END LOOP;
END $$;
""",
        # 3: what `[guard]` remembers (guard.py GuardState), shared by every host;
        # `username` is the name as the guard compares it (case-folded, storable).
        f"""CREATE TABLE IF NOT EXISTS {schema}.guard_granted (
    username text NOT NULL,
    address text NOT NULL,
    last_login timestamptz NOT NULL,
    PRIMARY KEY (username, address)
);
CREATE INDEX IF NOT EXISTS guard_granted_last_login ON {schema}.guard_granted (last_login);
CREATE TABLE IF NOT EXISTS {schema}.guard_seen (
    address text NOT NULL,
    username text NOT NULL,
    last_login timestamptz NOT NULL,
    PRIMARY KEY (address, username)
);
CREATE INDEX IF NOT EXISTS guard_seen_last_login ON {schema}.guard_seen (last_login);
CREATE TABLE IF NOT EXISTS {schema}.guard_blocked (
    username text PRIMARY KEY,
    blocked_from timestamptz NOT NULL,
    blocked_until timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS {schema}.guard_refused (
    username text NOT NULL,
    address text NOT NULL,
    last_refused timestamptz NOT NULL,
    reason text NOT NULL,
    PRIMARY KEY (username, address)
);
CREATE INDEX IF NOT EXISTS guard_refused_last_refused ON {schema}.guard_refused (last_refused);
ALTER TABLE {schema}.host ADD COLUMN IF NOT EXISTS guard_keep interval;
DO $$ DECLARE granted record; guarded text; BEGIN
    FOR granted IN SELECT a.grantee::regrole AS role, a.privilege_type AS privilege
        FROM pg_class c, aclexplode(c.relacl) a
        WHERE c.oid = '{schema}.lease'::regclass AND a.grantee <> 0 AND a.grantee <> c.relowner
    LOOP
        FOREACH guarded IN ARRAY ARRAY['guard_granted', 'guard_seen', 'guard_blocked', 'guard_refused']
        LOOP
            EXECUTE format('GRANT %s ON {schema}.%s TO %s', granted.privilege, guarded, granted.role);
        END LOOP;
    END LOOP;
END $$;
""",
    )


def schema_sql(schema: str) -> str:
    """What a DBA runs instead of letting exactcron create the schema."""
    steps = "".join(migrations(schema))
    return f"{steps}INSERT INTO {schema}.schema_version VALUES ({SCHEMA_VERSION});\n"


def upgrade_sql(schema: str, version: int) -> str:
    """What a DBA runs to bring a store from `version - 1` to `version`."""
    return f"{migrations(schema)[version - 1]}UPDATE {schema}.schema_version SET version = {version};\n"


def grants_sql(schema: str, writer: str, reader: str) -> str:
    """The privileges of the POP/IMAP hosts' role and of the MTAs' read-only role."""
    return (
        f"GRANT USAGE ON SCHEMA {schema} TO {writer}, {reader};\n"
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {writer};\n"
        f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {reader};\n"
    )


class PostgresLeaseStore:
    """Leases in PostgreSQL; one connection, opened on first use."""

    def __init__(
        self,
        store: StoreConfig,
        ignore: Sequence[Network],
        state: LocalState,
        repair: bool = True,
        guard: GuardConfig | None = None,
    ) -> None:
        self._config = store
        self._rules = guard if guard is not None and guard.enabled else None
        self._verdicts: list[Verdict] = []
        self._schema = store.schema
        # Leases other hosts granted inside this host's `ignore` are left out of its maps.
        self._ignore = tuple(ignore)
        self._repair = repair
        self._connection: psycopg.Connection[Any] | None = None
        self._writable = False
        # The version read when connecting, until something may have changed it.
        self._version: list[Any] | None = None
        # meta.flushes_forgotten, as read by the write transaction under way.
        self._forgotten: datetime | None = None
        self._cache = FileLeaseStore(state, repair, CACHE_FILE)
        # Each configuration is a host of its own: its timeout is its own.
        self._host = f"{socket.gethostname()}:{state.directory}"

    # -- the interface -------------------------------------------------------

    def begin(self) -> bool:
        self._connect()
        return False

    def version(self) -> Any:
        query = f"SELECT store_id, changes FROM {self._schema}.meta"
        if self._connection is None:
            # The quiet run: asked through libpq alone, psycopg need not be loaded.
            from exactcron.stores.libpq import one_row

            row = one_row(self._config.url, _DEFAULTS, query)
            if row is not None and row[0] is not None and row[1] is not None and row[1].isdigit():
                return [row[0], int(row[1])]
        connection = self._connect()
        if self._version is None:
            with self._guard("reading its version"):
                found = connection.execute(query).fetchone()
            assert found is not None
            self._version = [str(found[0]), found[1]]
        version, self._version = self._version, None
        return version

    def merge(
        self, logins: Iterable[Login], now: datetime, timeout: timedelta, ignore: Sequence[Network]
    ) -> list[str]:
        rules = self._rules
        # The same choice update.py makes: per address, its latest login (and
        # what a flush may spare), as believed; with `[guard]`, of the logins it admits.
        kept = LatestLogins()
        believed: list[Login] = []
        if rules is None:
            kept.keep(logins, now)
            if not kept.latest:
                return []
        else:
            # `[guard]` sees what could grant, in log order: believed logins outside `ignore`.
            refused = refusal_test(tuple(ignore))
            believed = [
                login
                for login in (believed_login(each, now) for each in logins)
                if login is not None and not refused(login.address)
            ]
            if not believed:
                return []
        verdicts: list[Verdict] = []
        with self._writing() as (cursor, table):
            if rules is None:
                hosts = self._load(cursor, table, list(kept.latest))
            else:
                admitted, verdicts = self._screen(cursor, believed, now, timeout, rules)
                kept.keep(admitted, now)
                revoked = [address for verdict in verdicts for address in verdict.revoked]
                hosts = self._load(cursor, table, list(dict.fromkeys([*kept.latest, *revoked])))
                for verdict in verdicts:
                    if verdict.revoked:
                        # As a flush at the time of the login that exceeded the limit.
                        table.flush(verdict.revoked, verdict.time)
                        self._write_flushes(cursor, table, verdict.revoked)
            forgotten = self._forgotten
            granted: dict[str, None] = {}
            for login in kept.logins():
                address = login.address
                # A flush record may have been deleted: a login logged before it grants nothing.
                if forgotten is not None and flush_time(login) <= forgotten:
                    continue
                before = table.leases.get(address)
                if not table.merge(login, now, timeout, ignore):
                    continue
                granted[address] = None
                lease = table.leases[address]
                if before is not None and before.server != MANUAL and lease.server == MANUAL:
                    # Its end is still that of the host that granted it: that host's
                    # timeout bounds it, it is no lease granted by hand.
                    table.leases[address] = lease._replace(server=before.server)
                else:
                    hosts[address] = self._host
            self._upsert(cursor, [table.leases[address] for address in granted], hosts)
        # Audited only once committed: a transaction that failed decided nothing.
        self._verdicts.extend(verdicts)
        return list(granted)

    def verdicts(self) -> list[Verdict]:
        taken, self._verdicts = self._verdicts, []
        return taken

    def guard_state(self, now: datetime) -> GuardState:
        """What `status` shows of the guard, from the store: the users refused
        for `max-addresses` within the window (with their addresses and
        blocks), and the addresses more users than allowed logged in from."""
        state = GuardState()
        rules = self._rules
        if rules is None:
            return state
        s = self._schema
        since = now - rules.window
        connection = self._connect()
        with self._guard("reading the guard's state"):
            connection.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            try:
                refused = connection.execute(
                    f"SELECT username, address, last_refused, reason FROM {s}.guard_refused"
                    " WHERE reason = %s AND last_refused > %s",
                    [MAX_ADDRESSES, since],
                ).fetchall()
                users = json.dumps(sorted({row[0] for row in refused if row[0]}))
                granted = connection.execute(
                    f"SELECT username, address, last_login FROM {s}.guard_granted"
                    f" WHERE last_login > %s AND username IN ({_ELEMENTS})",
                    [since, users],
                ).fetchall()
                blocked = connection.execute(
                    f"SELECT username, blocked_from, blocked_until FROM {s}.guard_blocked"
                    f" WHERE username IN ({_ELEMENTS})",
                    [users],
                ).fetchall()
                seen = connection.execute(
                    f"SELECT address, username, last_login FROM {s}.guard_seen WHERE last_login > %s"
                    f" AND address IN (SELECT address FROM {s}.guard_seen WHERE last_login > %s"
                    " GROUP BY address HAVING count(*) > %s)",
                    [since, since, rules.max_users_per_address],
                ).fetchall()
            finally:
                connection.execute("COMMIT")
        _fill_guard(state, granted, seen, blocked, refused)
        return state

    def add(self, address: str, now: datetime, duration: timedelta) -> Lease:
        with self._writing() as (cursor, table):
            self._load(cursor, table, [address])
            lease = table.add(address, now, duration)
            self._upsert(cursor, [lease], {address: self._host})
        return lease

    def flush(self, addresses: Sequence[str] | None, now: datetime) -> list[str]:
        s = self._schema
        with self._writing() as (cursor, table):
            if addresses is None:
                cursor.execute(f"DELETE FROM {s}.lease RETURNING address")
                table.leases = {
                    row[0]: _placeholder(row[0], now) for row in cursor.fetchall() if is_canonical(row[0])
                }
                revoked = table.flush_all(now)
                cursor.execute(f"UPDATE {s}.meta SET flushed_all = %s", [table.flushed_all])
                return revoked
            wanted = list(dict.fromkeys(addresses))
            self._load(cursor, table, wanted)
            revoked = table.flush(wanted, now)
            self._write_flushes(cursor, table, wanted)
        return revoked

    def prune(self, now: datetime, timeout: timedelta, ignore: Sequence[Network]) -> list[str]:
        """Delete expired leases, and flushes no login can outlive any more.

        Leases inside `ignore` stay: another host, with its own `ignore`, may
        have granted them; this host leaves them out of its maps (snapshot).
        Expired leases not deleted yet are in no map all the same.
        On a host whose role may only read (an MTA's), nothing is deleted:
        an expired lease is in no map and not in the view all the same.
        """
        self._connect()
        if not self._writable:
            return []
        s = self._schema
        with self._writing() as (cursor, table):
            # This host's timeout, for as long as it keeps running; the longest of
            # those seen lately is how long a flush record must be kept.
            # ... and how long its `[guard]` looks back (window + timeout), for the guard's rows.
            guard_keep = self._rules.window + timeout if self._rules is not None else None
            cursor.execute(
                f"INSERT INTO {s}.host AS h (name, timeout, seen, guard_keep) VALUES (%s, %s, now(), %s)"
                " ON CONFLICT (name) DO UPDATE SET timeout = excluded.timeout,"
                " seen = greatest(h.seen, excluded.seen), guard_keep = excluded.guard_keep",
                [self._host, timeout, guard_keep],
            )
            cursor.execute(f"DELETE FROM {s}.host WHERE seen < now() - %s", [HOST_FORGOTTEN_AFTER])
            self._prune_guard(cursor, now, timeout)
            cursor.execute(f"SELECT max(timeout) FROM {s}.host")
            found = cursor.fetchone()
            longest = max(timeout, found[0]) if found is not None and found[0] is not None else timeout
            # A login's lease ends at its time + the timeout in force: that of the
            # host that granted it, or (a host gone, a lease from before hosts were
            # recorded) the longest there is.
            cursor.execute(
                f"UPDATE {s}.lease SET expires = last_login + %s"
                " WHERE host = %s AND server IS DISTINCT FROM %s AND expires > last_login + %s",
                [timeout, self._host, MANUAL, timeout],
            )
            shortened = cursor.rowcount
            cursor.execute(
                f"UPDATE {s}.lease SET expires = last_login + %s"
                f" WHERE (host IS NULL OR host NOT IN (SELECT name FROM {s}.host))"
                " AND server IS DISTINCT FROM %s AND expires > last_login + %s",
                [longest, MANUAL, longest],
            )
            if shortened or cursor.rowcount:
                table.changed = True  # other hosts' quiet runs must see the new ends
            # Only what has expired by the database's clock as well: a host whose
            # clock runs ahead must not end the leases of the others early.
            cursor.execute(
                f"DELETE FROM {s}.lease WHERE expires <= least(%s, now()) RETURNING address", [now]
            )
            removed = [row[0] for row in cursor.fetchall() if is_canonical(row[0])]
            horizon = [now, longest]
            cursor.execute(
                f"WITH gone AS (DELETE FROM {s}.flush WHERE flushed <= least(%s, now()) - %s RETURNING flushed)"
                " SELECT max(flushed) FROM gone",
                horizon,
            )
            gone = cursor.fetchone()
            cursor.execute(
                f"UPDATE {s}.meta SET flushes_forgotten = greatest(flushes_forgotten, %s::timestamptz,"
                " CASE WHEN flushed_all <= least(%s, now()) - %s THEN flushed_all END),"
                " flushed_all = CASE WHEN flushed_all <= least(%s, now()) - %s THEN NULL ELSE flushed_all END",
                [gone[0] if gone is not None else None, *horizon, *horizon],
            )
        return sorted(removed, key=sort_key)

    def save(self) -> None:
        """Nothing: every change was committed as it was made."""

    def snapshot(self, now: datetime) -> Snapshot:
        """The leases in force at `now` and the version they belong to, read in one snapshot.

        Under the lock, they are also kept as this host's copy (last_known).
        """
        s = self._schema
        connection = self._connect()
        table = LeaseTable()
        instants: dict[datetime, datetime] = {}

        def shared(stamp: datetime) -> datetime:
            # Leases granted over the timeout share a few thousand times: one object each.
            if len(instants) >= 4096:
                instants.clear()
            stamp = _utc(stamp)
            return instants.setdefault(stamp, stamp)

        with self._guard("reading the leases"):
            connection.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            try:
                meta = connection.execute(f"SELECT store_id, changes FROM {s}.meta").fetchone()
                # A server-side cursor, read a few thousand rows at a time: 100,000
                # leases never sit in memory as one result.
                cursor = connection.cursor(name="exactcron_leases")
                cursor.itersize = _READ_BATCH
                cursor.execute(
                    f"SELECT address, username, last_login, expires, server FROM {s}.lease"
                    " WHERE expires > %s",
                    [now],
                )
                for address, user, last_login, expires, server in cursor:
                    # Only exactcron should write here; whatever else is found never reaches a map.
                    if not isinstance(address, str) or not is_canonical(address):
                        log.warning("lease store: skipped a lease for %r, not an address", address)
                        continue
                    table.leases[address] = Lease(address, user, shared(last_login), shared(expires), server)
            finally:
                connection.execute("COMMIT")
        faults.point("store:read")
        assert meta is not None
        version = [str(meta[0]), meta[1]]
        ignored = ignore_test(self._ignore)
        for address in [address for address in table.leases if ignored(address)]:
            del table.leases[address]
        active = table.active(now)
        if self._repair:
            table.changed = True
            self._cache.hold(table)
            self._cache.save()
        return Snapshot(active, version)

    def last_known(self, now: datetime) -> list[Lease]:
        return self._cache.last_known(now)

    def warnings(self, clock: datetime) -> list[str]:
        """Whether the database's clock and this host's (`clock`) agree."""
        connection = self._connect()
        with self._guard("reading its clock"):
            before = time.monotonic()
            row = connection.execute("SELECT clock_timestamp()").fetchone()
            elapsed = time.monotonic() - before
        assert row is not None
        skew = _utc(row[0]) - (clock + timedelta(seconds=elapsed / 2))
        if abs(skew) <= CLOCK_SKEW_WARNING:
            return []
        direction = "ahead of" if skew > timedelta(0) else "behind"
        return [
            f"the lease store's clock is {abs(skew).total_seconds():.0f}s {direction} this host's;"
            " leases are computed from each host's log times: run NTP on every host"
        ]

    # -- the database --------------------------------------------------------

    def _connect(self) -> psycopg.Connection[Any]:
        """The connection, set up (and the schema created or migrated) on first use."""
        if self._connection is not None:
            return self._connection
        try:
            import psycopg
            from psycopg.conninfo import conninfo_to_dict, make_conninfo
        except ImportError:
            raise ConfigError(
                "[store] needs psycopg 3: install python3-psycopg, or exactcron[postgresql]"
            ) from None
        with self._guard("connecting"):
            given = conninfo_to_dict(self._config.url)
            extra = {key: value for key, value in _DEFAULTS.items() if key not in given}
            connection = psycopg.connect(make_conninfo(self._config.url, **extra), autocommit=True)
            self._connection = connection
            self._check_schema(connection)
        return connection

    def _check_schema(self, connection: psycopg.Connection[Any]) -> None:
        """Read the store's version; create or migrate the schema when it is behind."""
        import psycopg

        s = self._schema
        query = (
            f"SELECT m.store_id, m.changes, (SELECT max(version) FROM {s}.schema_version),"
            f" has_table_privilege('{s}.lease', 'DELETE') FROM {s}.meta m"
        )
        try:
            row = connection.execute(query).fetchone()
        except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
            row = None
        if row is None or row[2] is None or row[2] < SCHEMA_VERSION:
            found = "missing" if row is None or row[2] is None else f"at version {row[2]}"
            step = (
                f"bringing schema {s} ({found}) to version {SCHEMA_VERSION}"
                " (a role that may not: a DBA runs the SQL in docs/shared-store.md)"
            )
            with self._guard(step):
                self._migrate(connection)
            row = connection.execute(query).fetchone()
            assert row is not None
        if row[2] > SCHEMA_VERSION:
            raise StoreUnavailableError(
                f"lease store {self._config.url}: schema {s} is version {row[2]}, newer than this"
                f" exactcron knows ({SCHEMA_VERSION}); upgrade exactcron"
            )
        self._version = [str(row[0]), row[1]]
        self._writable = bool(row[3])

    def _migrate(self, connection: psycopg.Connection[Any]) -> None:
        s = self._schema
        with connection.transaction():
            # One host migrates; the others wait here, then find it done.
            connection.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"exactcron schema {s}"])
            exists = connection.execute("SELECT to_regclass(%s)", [f"{s}.schema_version"]).fetchone()
            current = 0
            if exists is not None and exists[0] is not None:
                found = connection.execute(f"SELECT max(version) FROM {s}.schema_version").fetchone()
                current = found[0] if found is not None and found[0] is not None else 0
            steps = migrations(s)[current:]
            for step in steps:
                connection.execute(step)
            if steps:
                connection.execute(f"DELETE FROM {s}.schema_version")
                connection.execute(f"INSERT INTO {s}.schema_version VALUES ({SCHEMA_VERSION})")
                log.info("lease store: schema %s is now at version %d", s, SCHEMA_VERSION)

    @contextmanager
    def _writing(self) -> Iterator[tuple[psycopg.Cursor[Any], LeaseTable]]:
        """A write transaction, with every other writer waiting on the meta row.

        Yields a LeaseTable holding the store's `flush --all` time, for the
        caller to load the rows it changes into. The change counter moves
        when that table says it changed.
        """
        connection = self._connect()
        s = self._schema
        with self._guard("writing"), connection.transaction():
            cursor = connection.cursor()
            cursor.execute(f"SELECT flushed_all, flushes_forgotten FROM {s}.meta FOR UPDATE")
            row = cursor.fetchone()
            assert row is not None
            table = LeaseTable(flushed_all=_utc(row[0]) if row[0] is not None else None)
            self._forgotten = _utc(row[1]) if row[1] is not None else None
            yield cursor, table
            faults.point("store:writing")
            if table.changed:
                cursor.execute(f"UPDATE {s}.meta SET changes = changes + 1")
        self._version = None
        faults.point("store:committed")

    def _load(
        self, cursor: psycopg.Cursor[Any], table: LeaseTable, addresses: list[str]
    ) -> dict[str, str | None]:
        """The leases and flushes of `addresses`, into `table`; the host that granted each lease."""
        s = self._schema
        wanted = json.dumps(addresses)
        cursor.execute(
            f"SELECT address, username, last_login, expires, server, host FROM {s}.lease"
            f" WHERE address IN ({_ELEMENTS})",
            [wanted],
        )
        hosts: dict[str, str | None] = {}
        for address, user, last_login, expires, server, host in cursor.fetchall():
            table.leases[address] = Lease(address, user, _utc(last_login), _utc(expires), server)
            hosts[address] = host
        cursor.execute(f"SELECT address, flushed FROM {s}.flush WHERE address IN ({_ELEMENTS})", [wanted])
        for address, flushed in cursor.fetchall():
            table.flushed[address] = _utc(flushed)
        table.changed = False
        return hosts

    def _prune_guard(self, cursor: psycopg.Cursor[Any], now: datetime, timeout: timedelta) -> None:
        """Forget what no host's guard judges a login by any more: older than the
        longest window + timeout of the hosts seen lately (as the lease file's
        GuardState.prune), by this host's clock and the database's, whichever is
        behind (a host whose clock runs ahead forgets nothing early)."""
        s = self._schema
        cursor.execute(f"SELECT max(guard_keep) FROM {s}.host")
        found = cursor.fetchone()
        keeps = [keep for keep in (found[0] if found is not None else None,) if keep is not None]
        keep = max(keeps, default=timeout)
        horizon = [now, keep]
        for name, column in (("granted", "last_login"), ("seen", "last_login"), ("refused", "last_refused")):
            cursor.execute(f"DELETE FROM {s}.guard_{name} WHERE {column} <= least(%s, now()) - %s", horizon)
        cursor.execute(f"DELETE FROM {s}.guard_blocked WHERE blocked_until <= least(%s, now()) - %s", horizon)

    def _write_flushes(
        self, cursor: psycopg.Cursor[Any], table: LeaseTable, addresses: Sequence[str]
    ) -> None:
        """The flush records of `addresses` as `table` holds them, and their leases gone."""
        s = self._schema
        tombstones = [
            {"address": address, "flushed": _json_time(table.flushed[address])} for address in addresses
        ]
        cursor.execute(
            f"INSERT INTO {s}.flush AS f (address, flushed)"
            " SELECT address, flushed FROM json_to_recordset(%s::json) AS t(address text, flushed timestamptz)"
            " ON CONFLICT (address) DO UPDATE SET flushed = greatest(f.flushed, excluded.flushed)",
            [json.dumps(tombstones)],
        )
        cursor.execute(f"DELETE FROM {s}.lease WHERE address IN ({_ELEMENTS})", [json.dumps(list(addresses))])

    def _screen(
        self,
        cursor: psycopg.Cursor[Any],
        logins: list[Login],
        now: datetime,
        timeout: timedelta,
        rules: GuardConfig,
    ) -> tuple[list[Login], list[Verdict]]:
        """`[guard]`'s decisions on `logins` (in log order) against the store's
        state, written back; the logins it lets through, and its verdicts.

        Runs inside the write transaction: every writer on every host first
        waits on the meta row (`_writing`), so the rows read here are those
        every earlier batch committed and no other host can change them until
        this one commits. That one queue, not a lock per user row, is what
        keeps two hosts from both granting a user's 11th address: a row lock
        cannot lock a user or an address that has no row yet (a first login
        read on two hosts at once), and advisory locks per user, taken batch
        by batch in different orders, could deadlock.

        Only the rows of this batch's users and addresses are read: a user's
        granted addresses and block, an address's users, their refusals.
        """
        # The state keeps names as a column holds them, so that a name read
        # back is the name screened (`storable` commutes with case-folding).
        screened = [
            login if login.user is None else login._replace(user=storable(login.user)) for login in logins
        ]
        originals = {id(proxy): login for proxy, login in zip(screened, logins, strict=True)}
        users = sorted({key for key in (user_key(login.user) for login in screened) if key is not None})
        addresses = sorted({login.address for login in screened})
        s = self._schema
        wanted_users, wanted_addresses = json.dumps(users), json.dumps(addresses)
        cursor.execute(
            f"SELECT username, address, last_login FROM {s}.guard_granted WHERE username IN ({_ELEMENTS})",
            [wanted_users],
        )
        granted = cursor.fetchall()
        cursor.execute(
            f"SELECT address, username, last_login FROM {s}.guard_seen WHERE address IN ({_ELEMENTS})",
            [wanted_addresses],
        )
        seen = cursor.fetchall()
        cursor.execute(
            f"SELECT username, blocked_from, blocked_until FROM {s}.guard_blocked"
            f" WHERE username IN ({_ELEMENTS})",
            [wanted_users],
        )
        blocked = cursor.fetchall()
        cursor.execute(
            f"SELECT username, address, last_refused, reason FROM {s}.guard_refused"
            f" WHERE address IN ({_ELEMENTS}) AND (username = '' OR username IN ({_ELEMENTS}))",
            [wanted_addresses, wanted_users],
        )
        refused = cursor.fetchall()
        state = GuardState()
        _fill_guard(state, granted, seen, blocked, refused)
        before = _guard_rows(state)
        admitted, verdicts = state.screen(screened, rules, now - timeout)
        if state.changed:
            self._write_guard(cursor, before, _guard_rows(state))
        return [originals[id(login)] for login in admitted], verdicts

    def _write_guard(
        self,
        cursor: psycopg.Cursor[Any],
        before: dict[tuple[str, ...], tuple[Any, ...]],
        after: dict[tuple[str, ...], tuple[Any, ...]],
    ) -> None:
        """The guard's rows that changed from `before` to `after`: deleted, inserted or updated."""
        s = self._schema
        for name, keys, values in _GUARD_TABLES:
            gone = [
                dict(zip(keys, key[1:], strict=True)) for key in before if key[0] == name and key not in after
            ]
            match = " AND ".join(f"g.{column} = t.{column}" for column in keys)
            if gone:
                cursor.execute(
                    f"DELETE FROM {s}.guard_{name} g USING json_to_recordset(%s::json) AS t({_kinds(keys)})"
                    f" WHERE {match}",
                    [json.dumps(gone)],
                )
            changed = [
                {**dict(zip(keys, key[1:], strict=True)), **dict(zip(values, _guard_json(row), strict=True))}
                for key, row in after.items()
                if key[0] == name and before.get(key) != row
            ]
            if not changed:
                continue
            columns = ", ".join((*keys, *values))
            cursor.execute(
                f"INSERT INTO {s}.guard_{name} ({columns})"
                f" SELECT {columns} FROM json_to_recordset(%s::json) AS t({_kinds((*keys, *values))})"
                f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET "
                + ", ".join(f"{column} = excluded.{column}" for column in values),
                [json.dumps(changed)],
            )

    def _upsert(self, cursor: psycopg.Cursor[Any], leases: list[Lease], hosts: dict[str, str | None]) -> None:
        """Write `leases`, each with the host (`hosts`) whose timeout bounds it."""
        if not leases:
            return
        s = self._schema
        rows = [
            {
                "address": lease.address,
                "username": storable(lease.user),
                "last_login": _json_time(lease.last_login),
                "expires": _json_time(lease.expires),
                "server": storable(lease.server),
                "host": storable(hosts.get(lease.address)),
            }
            for lease in leases
        ]
        # One JSON text rather than six arrays: psycopg adapts a list item by item.
        cursor.execute(
            f"INSERT INTO {s}.lease (address, username, last_login, expires, server, host)"
            " SELECT address, username, last_login, expires, server, host FROM json_to_recordset(%s::json)"
            " AS l(address text, username text, last_login timestamptz, expires timestamptz, server text,"
            " host text)"
            " ON CONFLICT (address) DO UPDATE SET username = excluded.username,"
            " last_login = excluded.last_login, expires = excluded.expires, server = excluded.server,"
            " host = excluded.host",
            [json.dumps(rows)],
        )

    @contextmanager
    def _guard(self, step: str) -> Iterator[None]:
        """Any database error as one line and exit 75; the connection is not used again."""
        import psycopg

        try:
            yield
        except psycopg.Error as error:
            if self._connection is not None:
                self._connection.close()
                self._connection = None
            reason = " ".join(str(error).split()) or type(error).__name__
            raise StoreUnavailableError(f"lease store {self._config.url}: {step} failed: {reason}") from None

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


# The guard's tables (`guard_NAME`): their key columns and the rest.
_GUARD_TABLES = (
    ("granted", ("username", "address"), ("last_login",)),
    ("seen", ("address", "username"), ("last_login",)),
    ("blocked", ("username",), ("blocked_from", "blocked_until")),
    ("refused", ("username", "address"), ("last_refused", "reason")),
)
_TIMES = {"last_login", "blocked_from", "blocked_until", "last_refused"}


def _kinds(columns: Sequence[str]) -> str:
    return ", ".join(f"{column} {'timestamptz' if column in _TIMES else 'text'}" for column in columns)


def _guard_rows(state: GuardState) -> dict[tuple[str, ...], tuple[Any, ...]]:
    """Every row of the guard's tables `state` holds: (table, key...) -> the rest."""
    rows: dict[tuple[str, ...], tuple[Any, ...]] = {}
    for user, addresses in state.granted.items():
        for address, last in addresses.items():
            rows["granted", user, address] = (last,)
    for address, users in state.seen.items():
        for user, last in users.items():
            rows["seen", address, user] = (last,)
    for user, span in state.blocked.items():
        rows["blocked", user] = span
    for (user, address), (last, reason) in state.refused.items():
        rows["refused", user, address] = (last, reason)
    return rows


def _guard_json(row: tuple[Any, ...]) -> list[Any]:
    return [_json_time(value) if isinstance(value, datetime) else value for value in row]


def _fill_guard(
    state: GuardState,
    granted: Iterable[tuple[Any, ...]],
    seen: Iterable[tuple[Any, ...]],
    blocked: Iterable[tuple[Any, ...]],
    refused: Iterable[tuple[Any, ...]],
) -> None:
    """`state` from the guard's rows; a row no exactcron wrote (not an address,
    an unknown reason) is left out."""
    for user, address, last in granted:
        if is_canonical(address):
            state.granted.setdefault(user, {})[address] = _utc(last)
    for address, user, last in seen:
        if is_canonical(address):
            state.seen.setdefault(address, {})[user] = _utc(last)
    for user, since, until in blocked:
        state.blocked[user] = (_utc(since), _utc(until))
    for user, address, last, reason in refused:
        if is_canonical(address) and reason in REASONS:
            state.refused[user, address] = (_utc(last), reason)
    state.changed = False


# The addresses of a JSON array parameter, as rows.
_ELEMENTS = "SELECT json_array_elements_text(%s::json)"


# What a PostgreSQL text value cannot hold: NUL, and UTF-16 surrogates (a
# log's undecodable bytes, kept by surrogateescape).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(text: str | None) -> str | None:
    """`text` as a PostgreSQL column can hold it: the text `\\x00` for a NUL
    (as Cyrus's logfmt writes it), `\\xNN` for an undecodable byte NN,
    `\\uDXXX` for another surrogate.

    A user name is only shown and audited; escaped, it never stops a run and
    the lease is granted all the same. (A name holding that text literally
    is stored alike; no name that PostgreSQL can hold changes.)
    """
    if text is None or _UNSTORABLE.search(text) is None:
        return text
    return _UNSTORABLE.sub(_escape, text)


def _escape(found: re.Match[str]) -> str:
    code = ord(found.group(0))
    if 0xDC80 <= code <= 0xDCFF:
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _json_time(stamp: datetime) -> str:
    return stamp.astimezone(UTC).isoformat()


def _utc(stamp: datetime) -> datetime:
    return stamp if stamp.tzinfo is UTC else stamp.astimezone(UTC)


def _placeholder(address: str, now: datetime) -> Lease:
    """A lease `flush --all` removed, for LeaseTable.flush_all to list."""
    return Lease(address, None, now, now)
