"""Results of one load-generator round: the record, percentiles and a human table."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


def percentile(sorted_values: Sequence[int], q: float) -> int:
    """Return the nearest-rank ``q`` percentile (0-100) of already sorted values; 0 if none."""
    if not sorted_values:
        return 0
    rank = max(1, min(len(sorted_values), int(q / 100 * len(sorted_values) + 0.999999)))
    return sorted_values[rank - 1]


@dataclass(slots=True)
class RoundResult:
    """One measured round (the JSON line the load generator prints)."""

    target: str
    mode: str  # "steady" or "burst"
    connections: int  # subscribed connections
    events: int
    rate: float  # events/s asked for; 0 = max burst
    deliveries: int  # event copies received (duplicates included)
    expected: int
    lost: int  # (connection, event) pairs never received
    duplicates: int
    window_s: float  # first publish -> last delivery (or the deadline)
    deliveries_per_s: float
    server_cpu_us_per_delivery: float | None  # schedstat; None without a local server pid
    server_cpu_tick_us_per_delivery: float | None  # utime+stime, 10 ms resolution
    server_cpu_s: float | None
    latency_ms_p50: float
    latency_ms_p99: float
    latency_ms_max: float
    client_cpu_s: float  # all client processes over the window
    client_busy: float  # busiest client process: CPU / wall (near 1.0 = it was the limit)
    rss_per_conn_kb: float | None  # server RSS growth / connections, measured after subscribe
    timed_out: bool
    errors: int  # error frames and connections lost during the round
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Return the record as a JSON-ready dict."""
        return asdict(self)


COLUMNS = (
    ("target", "target", "{}"),
    ("mode", "mode", "{}"),
    ("connections", "N", "{}"),
    ("events", "events", "{}"),
    ("deliveries_per_s", "deliv/s", "{:,.0f}"),
    ("server_cpu_us_per_delivery", "cpu µs/deliv", "{:.2f}"),
    ("latency_ms_p50", "p50 ms", "{:.1f}"),
    ("latency_ms_p99", "p99 ms", "{:.1f}"),
    ("latency_ms_max", "max ms", "{:.1f}"),
    ("lost", "lost", "{}"),
    ("rss_per_conn_kb", "KB/conn", "{:.1f}"),
    ("client_busy", "client busy", "{:.0%}"),
)


def table(rows: Iterable[dict[str, Any]]) -> str:
    """Render result dicts as an aligned plain-text table."""
    cells = [[title for _, title, _ in COLUMNS]]
    for row in rows:
        line = []
        for key, _, fmt in COLUMNS:
            value = row.get(key)
            line.append("-" if value is None else fmt.format(value))
        cells.append(line)
    widths = [max(len(r[i]) for r in cells) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells)
