"""One query through libpq itself, for the quiet run.

Loading psycopg costs a quiet run more than everything else it does; the
question it asks (the store's change counter) needs one connection and one
row. Where libpq cannot be loaded, or anything is off, the answer is None
and the caller asks through psycopg, which also says what went wrong.
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping

_CONNECTION_OK = 0
_PGRES_TUPLES_OK = 2


def _load() -> ctypes.CDLL | None:
    try:
        library = ctypes.CDLL("libpq.so.5")
    except OSError:
        return None
    library.PQconnectdbParams.restype = ctypes.c_void_p
    library.PQconnectdbParams.argtypes = [
        ctypes.POINTER(ctypes.c_char_p),
        ctypes.POINTER(ctypes.c_char_p),
        ctypes.c_int,
    ]
    library.PQstatus.argtypes = [ctypes.c_void_p]
    library.PQexec.restype = ctypes.c_void_p
    library.PQexec.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    library.PQresultStatus.argtypes = [ctypes.c_void_p]
    library.PQntuples.argtypes = [ctypes.c_void_p]
    library.PQnfields.argtypes = [ctypes.c_void_p]
    library.PQgetisnull.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    library.PQgetvalue.restype = ctypes.c_char_p
    library.PQgetvalue.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    library.PQclear.argtypes = [ctypes.c_void_p]
    library.PQfinish.argtypes = [ctypes.c_void_p]
    return library


def one_row(url: str, defaults: Mapping[str, str], query: str) -> list[str | None] | None:
    """The single row `query` returns on the database `url`, as text; None on anything else.

    `defaults` are connection parameters the URL may override.
    """
    library = _load()
    if library is None:
        return None
    # With expand_dbname, the URI's own parameters win over those before it.
    keys = [key.encode() for key in defaults] + [b"dbname"]
    values = [value.encode() for value in defaults.values()] + [url.encode()]
    key_array = (ctypes.c_char_p * (len(keys) + 1))(*keys, None)
    value_array = (ctypes.c_char_p * (len(values) + 1))(*values, None)
    connection = library.PQconnectdbParams(key_array, value_array, 1)
    if not connection:
        return None
    try:
        if library.PQstatus(connection) != _CONNECTION_OK:
            return None
        result = library.PQexec(connection, query.encode())
        if not result:
            return None
        try:
            if library.PQresultStatus(result) != _PGRES_TUPLES_OK or library.PQntuples(result) != 1:
                return None
            row: list[str | None] = []
            for column in range(library.PQnfields(result)):
                value = library.PQgetvalue(result, 0, column)
                null = library.PQgetisnull(result, 0, column) or value is None
                row.append(None if null else value.decode())
            return row
        finally:
            library.PQclear(result)
    finally:
        library.PQfinish(connection)
