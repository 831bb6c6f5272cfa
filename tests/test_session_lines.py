"""The lines that open and end a Dovecot session (rules/sessions.py), in every form read.

Logins open a session only with their `session=<ID>` and `mpid=`, the ID
read outside the user name; the mail process's end lines (2.3 and 2.4,
through syslog, the journal's form and Dovecot's own log file) end it by
the ID; what only looks like one (another tag, another host, an older
form without the ID, an ID inside the user name) ends nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exactcron.config import BUILTIN_RULES
from exactcron.rules.parser import LineParser
from exactcron.rules.sessions import SessionEnded, SessionOpened, SessionParser
from exactcron.timestamps import TimestampParser
from tests.support.clock import NOW_TIME

ID = "kT3M0DLGQOMKAAAB"
ENDED_AT = datetime(2026, 11, 25, 17, 55, tzinfo=UTC)


def events(
    *lines: str, hosts: frozenset[str] | None = frozenset({"mail"})
) -> list[SessionOpened | SessionEnded]:
    """What a session parser notes reading the lines, as one block and again line by line (the journal)."""
    noted: list[SessionOpened | SessionEnded] = []
    parser = SessionParser(
        (BUILTIN_RULES["dovecot"],), TimestampParser(NOW_TIME, UTC), hosts, noted=noted.append
    )
    parser.logins("".join(line + "\n" for line in lines).encode())
    by_line: list[SessionOpened | SessionEnded] = []
    parser.noted = by_line.append
    for line in lines:
        parser.parse(line.encode())
    assert by_line == noted
    return noted


def ended(*lines: str) -> list[str]:
    return [event.session for event in events(*lines) if isinstance(event, SessionEnded)]


LOGIN = (
    "2026-11-25T17:50:13.486319+00:00 mail dovecot: imap-login: Login: user=<alice>, method=PLAIN, "
    f"rip=192.0.2.10, lip=10.77.0.1, mpid=4242, TLS, session=<{ID}>"
)


@pytest.mark.parametrize(
    "line",
    [
        LOGIN,
        LOGIN.replace("Login:", "Logged in:"),  # 2.4
        # Sessions first (login_log_format_elements reordered).
        "2026-11-25T17:50:13+00:00 mail dovecot: pop3-login: Login: "
        f"session=<{ID}>, user=<alice>, method=PLAIN, rip=192.0.2.10, lip=10.77.0.1, mpid=4242",
        # Dovecot's own log file (info_log_path).
        f"Nov 25 17:50:13 imap-login: Info: Login: user=<alice>, method=PLAIN, rip=192.0.2.10, "
        f"lip=10.77.0.1, mpid=4242, session=<{ID}>",
    ],
)
def test_a_login_with_its_mail_process_opens_its_session(line: str) -> None:
    (opened,) = events(line)
    assert isinstance(opened, SessionOpened)
    assert opened.session == ID and opened.login.address == "192.0.2.10" and opened.login.user == "alice"


@pytest.mark.parametrize(
    "line",
    [
        LOGIN.replace("mpid=4242, ", ""),  # proxied: its end is logged elsewhere
        LOGIN.replace(f", session=<{ID}>", ""),
        LOGIN.replace("rip=192.0.2.10", "rip=10.77.0.1"),  # grants nothing
        LOGIN.replace(" mail ", " other "),  # another host
    ],
)
def test_a_login_without_a_session_to_pair_opens_none(line: str) -> None:
    assert events(line) == []


def test_a_user_name_imitating_the_session_never_chooses_it() -> None:
    line = LOGIN.replace("user=<alice>", "user=<alice, session=<Chosen>")
    assert [event.session for event in events(line) if isinstance(event, SessionOpened)] in ([], [ID])


STAMP = "2026-11-25T17:55:00+00:00 mail dovecot: "


@pytest.mark.parametrize(
    "line",
    [
        STAMP + f"imap(alice)<4242><{ID}>: Disconnected: Logged out in=91 out=512 deleted=0 expunged=0",
        STAMP + f"pop3(alice)<4242><{ID}>: Disconnected: Logged out top=0/0, retr=1/1187, del=0/1, size=1170",
        STAMP + f"imap(alice)<4242><{ID}>: Connection closed (IDLE running for 0.001 + waiting input for "
        "1739.539 secs, 2 B in + 10 B out, state=wait-input) in=120 out=4710",
        STAMP + f"pop3(alice)<4242><{ID}>: Connection closed: Connection reset by peer top=0/0, retr=0/0",
        STAMP + f"imap(alice)<4242><{ID}>: Disconnected for inactivity in=10 out=20",
        STAMP + f"imap(alice@example.net)<4243><{ID}>: Disconnected: Server shutting down. in=1 out=2",
        STAMP + f"imap-hibernate(alice)<4300><{ID}>: Connection closed in=10 out=20",
        # The user's name imitates a prefix: the last one is Dovecot's.
        STAMP + f"imap(a)<1><Forged>: Logged out)<4242><{ID}>: Disconnected: Logged out in=1 out=2",
        # Dovecot's own log file.
        f"Nov 25 17:55:00 imap(alice)<4242><{ID}>: Info: Disconnected: Logged out in=91 out=512",
        f"2026-11-25 17:55:00 imap(alice)<4242><{ID}>: Info: Disconnected: Logged out in=91 out=512",
    ],
)
def test_the_end_lines_of_dovecot_23_and_24_end_the_session(line: str) -> None:
    found = events(line)
    assert [event.session for event in found] == [ID]
    assert isinstance(found[0], SessionEnded) and found[0].time == ENDED_AT


@pytest.mark.parametrize(
    "line",
    [
        STAMP + "imap(alice)<4242>: Disconnected: Logged out in=91 out=512",  # no ID: older forms
        STAMP + "imap(alice): Logged out in=91 out=512",
        STAMP + f"imap(alice)<4242><{ID}>: Error: Mailbox INBOX: Disconnected while reading",
        STAMP + f"imap(alice)<4242><{ID}>: Info: Mailbox INBOX: Logged out of nothing",
        STAMP.replace("dovecot:", "postfix/smtpd[12]:")
        + f"imap(alice)<4242><{ID}>: Disconnected: Logged out",
        STAMP.replace(" mail ", " other ") + f"imap(alice)<4242><{ID}>: Disconnected: Logged out",
        STAMP
        + "pop3-login: Disconnected: Connection closed (auth failed, 1 attempts in 2 secs): user=<alice>",
        STAMP + f"imap(alice)<4242><{ID}>: Disconnected: Logged out" + "x" * 9000,
    ],
)
def test_what_only_looks_like_an_end_line_ends_nothing(line: str) -> None:
    assert ended(line) == []


def test_a_source_without_the_key_keeps_linelparsers_own_class() -> None:
    # Held sessions cost a source without hold_while_connected nothing: it never builds a SessionParser.
    assert type(LineParser((BUILTIN_RULES["dovecot"],), TimestampParser(NOW_TIME, UTC))) is LineParser


@given(st.binary(max_size=300))
def test_no_bytes_break_the_session_reader(noise: bytes) -> None:
    noted: list[SessionOpened | SessionEnded] = []
    parser = SessionParser(
        (BUILTIN_RULES["dovecot"],), TimestampParser(NOW_TIME, UTC), None, noted=noted.append
    )
    block = STAMP.encode() + b"imap(a)<1><" + noise + b">: Disconnected\n" + noise + b"\n"
    parser.logins(block)
    parser.parse(noise)
    assert all(isinstance(event, SessionOpened | SessionEnded) for event in noted)


def process_events(*lines: str) -> list[SessionOpened | SessionEnded]:
    noted: list[SessionOpened | SessionEnded] = []
    rules = (BUILTIN_RULES["courier"], BUILTIN_RULES["uw-imap"])
    parser = SessionParser(rules, TimestampParser(NOW_TIME, UTC), frozenset({"mail"}), noted=noted.append)
    parser.logins("".join(line + "\n" for line in lines).encode())
    by_line: list[SessionOpened | SessionEnded] = []
    parser.noted = by_line.append
    for line in lines:
        parser.parse(line.encode())
    assert by_line == noted
    return noted


COURIER_LOGIN = (
    "2026-11-25T17:50:13+00:00 mail imapd[4242]: LOGIN, user=alice, ip=[::ffff:192.0.2.10], port=[52326], "
    "protocol=IMAP"
)
UW_LOGIN = "2026-11-25T17:50:13+00:00 mail imapd[4243]: Login user=alice host=client.example.net [192.0.2.10]"
AT = "2026-11-25T17:55:00+00:00 mail "


@pytest.mark.parametrize(
    ("login", "end"),
    [
        (
            COURIER_LOGIN,
            "imapd[4242]: LOGOUT, user=alice, ip=[::ffff:192.0.2.10], headers=0, body=0, rcvd=37, "
            "sent=470, time=3",
        ),
        (
            COURIER_LOGIN,
            "imapd[4242]: DISCONNECTED, user=alice, ip=[::ffff:192.0.2.10], headers=0, body=0, "
            "rcvd=37, sent=470, time=300, starttls=1",
        ),
        (
            COURIER_LOGIN,
            "imapd[4242]: TIMEOUT, user=alice, ip=[::ffff:192.0.2.10], headers=0, body=0, time=1800",
        ),
        (
            COURIER_LOGIN.replace("imapd[4242]: LOGIN", "pop3d[4242]: LOGIN"),
            "pop3d[4242]: LOGOUT, user=alice, ip=[::ffff:192.0.2.10], port=[52326], top=0, retr=0, rcvd=18, "
            "sent=1390, time=5, stls=1",
        ),
        (UW_LOGIN, "imapd[4243]: Logout user=alice host=client.example.net [192.0.2.10]"),
        (UW_LOGIN, "imapd[4243]: Autologout user=alice host=client.example.net [192.0.2.10]"),
        (UW_LOGIN, "imapd[4243]: Killed (lost mailbox lock) user=alice host=client.example.net [192.0.2.10]"),
        (
            UW_LOGIN,
            "imapd[4243]: Command stream end of file, while reading line user=alice host=[192.0.2.10]",
        ),
    ],
)
def test_courier_and_uw_imap_sessions_end_with_their_own_process(login: str, end: str) -> None:
    opened, ended_event = process_events(login, AT + end)
    assert isinstance(opened, SessionOpened) and isinstance(ended_event, SessionEnded)
    assert opened.session == ended_event.session and ended_event.time == ENDED_AT
    assert ended_event.who == ("alice", "192.0.2.10")


@pytest.mark.parametrize(
    "end",
    [
        "imapd[9999]: Logout user=alice host=client.example.net [192.0.2.10]",  # another process
        "imapd: Logout user=alice host=client.example.net [192.0.2.10]",  # no PID
        "sshd[4243]: Logout user=alice host=client.example.net [192.0.2.10]",  # another program
        "imapd[4243]: Login user=alice host=client.example.net [192.0.2.10]",  # a login is no end
    ],
)
def test_an_end_line_of_another_process_is_not_this_sessions(end: str) -> None:
    found = process_events(UW_LOGIN, AT + end)
    opened = [event.session for event in found if isinstance(event, SessionOpened)]
    ended_ids = [event.session for event in found if isinstance(event, SessionEnded)]
    assert not set(ended_ids) & set(opened[:1])


def test_courier_without_a_pid_opens_no_session() -> None:
    assert process_events(COURIER_LOGIN.replace("imapd[4242]:", "imapd:")) == []
