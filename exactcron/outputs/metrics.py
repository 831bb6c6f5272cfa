"""`metrics_file`: the Prometheus text exposition (for node_exporter's textfile collector).

`render` is pure; `write` replaces the file by rename, so the collector
never reads half a file. No fsync: the file is rewritten every minute, and
a lost one says no more than a stale timestamp.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from exactcron.atomic import remove_leftovers, write_atomically
from exactcron.outputs.health import RECENT_GRANT_DELAYS, RunRecord, nearest_rank


def render(record: RunRecord, unread: Mapping[str, int | None], sources: list[str], duration: float) -> str:
    succeeded = record.outcome == "ok"
    out: list[str] = []

    def family(name: str, kind: str, help_text: str) -> None:
        out.append(f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n")

    family("exactcron_leases", "gauge", "Addresses allowed to relay after the last update.")
    if record.leases is not None:
        out.append(f"exactcron_leases {record.leases}\n")
    family("exactcron_last_run_success", "gauge", "1 when the last update succeeded, 0 when it failed.")
    out.append(f"exactcron_last_run_success {1 if succeeded else 0}\n")
    family(
        "exactcron_last_success_timestamp_seconds",
        "gauge",
        "Unix time of the last update that succeeded.",
    )
    if record.last_success is not None:
        out.append(f"exactcron_last_success_timestamp_seconds {record.last_success.timestamp():.3f}\n")
    family("exactcron_logins_total", "counter", "Successful logins read from each source.")
    for source in sources:
        out.append(
            f'exactcron_logins_total{{source="{_label(source)}"}} {record.logins_total.get(source, 0)}\n'
        )
    family("exactcron_unread_bytes", "gauge", "Bytes of each log not read yet (none for a journal).")
    for source in sources:
        bytes_left = unread.get(source)
        if bytes_left is not None:
            out.append(f'exactcron_unread_bytes{{source="{_label(source)}"}} {bytes_left}\n')
    family(
        "exactcron_unreadable_lines_total",
        "counter",
        "Log lines of each source skipped because they could not be read (they grant nothing).",
    )
    for source in sources:
        count = record.unreadable_lines.get(source, 0)
        out.append(f'exactcron_unreadable_lines_total{{source="{_label(source)}"}} {count}\n')
    family("exactcron_refused_total", "counter", "Logins [guard] refused, per reason (they granted nothing).")
    for reason in ("max-addresses", "shared"):
        out.append(f'exactcron_refused_total{{reason="{reason}"}} {record.refused_total.get(reason, 0)}\n')
    family(
        "exactcron_grant_delay_seconds",
        "summary",
        "From a login line's stamp to its map being installed, per lease granted or extended"
        f" (quantiles over the latest {RECENT_GRANT_DELAYS}).",
    )
    recent = sorted(record.recent_grant_delays)
    if recent:
        for quantile in (0.5, 0.99):
            value = nearest_rank(recent, quantile)
            out.append(f'exactcron_grant_delay_seconds{{quantile="{quantile}"}} {value:.6f}\n')
    out.append(f"exactcron_grant_delay_seconds_count {record.grant_delay_count}\n")
    out.append(f"exactcron_grant_delay_seconds_sum {record.grant_delay_sum:.6f}\n")
    family("exactcron_run_duration_seconds", "gauge", "How long the last update took.")
    out.append(f"exactcron_run_duration_seconds {duration:.6f}\n")
    return "".join(out)


def write(path: Path, text: str) -> None:
    """Replace `path` with `text`: a new file under a random dot name beside it
    (which the textfile collector skips), then rename. The directory is
    often writable by a group: see atomic.py. Called under the lock, so the
    copies a killed run left are ours to remove."""
    remove_leftovers(path)
    write_atomically(path, text.encode(), 0o644, durable=False, what="metrics_file")


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
