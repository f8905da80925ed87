"""Render benchmark results into docs/PERFORMANCE.md (tables between markers) and a PNG plot.

``python -m bench.report [bench/results/full.json]`` re-renders from a saved run. Figures are
medians over repetitions; ratios compare our server ("realtime") with the floor and the
naive Tornado server at the same N and mode.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "PERFORMANCE.md"
PLOT = ROOT / "docs" / "performance.png"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
ORDER = ("realtime", "floor", "naive", "socketio", "channels")

Key = tuple[str, int, str]


def medians(rows: list[dict[str, Any]]) -> dict[Key, dict[str, Any]]:
    """Group rounds by (target, N, mode) and take medians (sums for lost, max for timed_out)."""
    groups: dict[Key, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[(row["target"], row["connections"], row["mode"])].append(row)
    out: dict[Key, dict[str, Any]] = {}
    for key, group in groups.items():

        def med(name: str, group: list[dict[str, Any]] = group) -> float | None:
            values = [r[name] for r in group if r.get(name) is not None]
            return statistics.median(values) if values else None

        out[key] = {
            "runs": len(group),
            "events": max(r["events"] for r in group),
            "deliveries_per_s": med("deliveries_per_s"),
            "cpu": med("server_cpu_us_per_delivery"),
            "p50": med("latency_ms_p50"),
            "p99": med("latency_ms_p99"),
            "max": max(r["latency_ms_max"] for r in group),
            "lost": sum(r["lost"] for r in group),
            "expected": sum(r["expected"] for r in group),
            "timed_out": any(r["timed_out"] for r in group),
            "rss": med("rss_per_conn_kb"),
            "client_busy": max(r["client_busy"] for r in group),
        }
    return out


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def results_table(stats: dict[Key, dict[str, Any]]) -> str:
    """The full table: every target, N and mode, with ratios to the floor and naive."""
    lines = [
        "| target | N | mode | events | deliveries/s | CPU µs/delivery | ratio to floor "
        "| naive ÷ this | p50 ms | p99 ms | max ms | lost | KB/conn | client busy | runs |",
        "|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    keys = sorted(stats, key=lambda k: (k[1], k[2], ORDER.index(k[0]) if k[0] in ORDER else 9))
    for target, n, mode in keys:
        s = stats[(target, n, mode)]
        floor = stats.get(("floor", n, mode), {}).get("cpu")
        naive = stats.get(("naive", n, mode), {}).get("cpu")
        vs_floor = s["cpu"] / floor if s["cpu"] and floor else None
        naive_div = naive / s["cpu"] if s["cpu"] and naive else None
        lost = f"{s['lost']}" + (" (timed out)" if s["timed_out"] else "")
        name = f"**{target}**" if target == "realtime" else target
        lines.append(
            f"| {name} | {n:,} | {mode} | {s['events']} | {_fmt(s['deliveries_per_s'], ',.0f')} "
            f"| {_fmt(s['cpu'], '.2f')} | {_fmt(vs_floor, '.2f')} | {_fmt(naive_div, '.1f')} "
            f"| {_fmt(s['p50'], '.1f')} | {_fmt(s['p99'], '.1f')} | {_fmt(s['max'], '.1f')} "
            f"| {lost} | {_fmt(s['rss'], '.1f')} | {_fmt(s['client_busy'], '.0%')} | {s['runs']} |"
        )
    return "\n".join(lines)


def targets_table(stats: dict[Key, dict[str, Any]]) -> str:
    """Issue 7's targets, each checked against our server's medians."""
    rows = ["| target | N | measured | goal | met |", "|---|--:|--:|---|---|"]

    def add(what: str, n: int | str, value: float | None, goal: str, ok: bool | None) -> None:
        shown = "pending" if value is None else f"{value:,.2f}".removesuffix(".00")
        verdict = "pending" if ok is None else ("yes" if ok else "**no**")
        rows.append(f"| {what} | {n} | {shown} | {goal} | {verdict} |")

    sizes = sorted({k[1] for k in stats})
    for n in [x for x in sizes if x >= 5000] or sizes:
        for mode in ("burst", "steady"):
            ours = stats.get(("realtime", n, mode), {}).get("cpu")
            floor = stats.get(("floor", n, mode), {}).get("cpu")
            naive = stats.get(("naive", n, mode), {}).get("cpu")
            where = f"{n:,} {mode}"
            add("CPU µs/delivery", where, ours, "≤ 8", None if ours is None else ours <= 8)
            ratio = ours / floor if ours and floor else None
            add("ratio to floor", where, ratio, "≤ 2", None if ratio is None else ratio <= 2)
            gain = naive / ours if ours and naive else None
            add("naive ÷ ours", where, gain, "≥ 5", None if gain is None else gain >= 5)
    best = max(
        (
            s["deliveries_per_s"]
            for (t, _, m), s in stats.items()
            if t == "realtime" and m == "burst"
        ),
        default=None,
    )
    add(
        "max-burst deliveries/s",
        "any",
        best,
        "≥ 150,000",
        None if best is None else best >= 150_000,
    )
    big = max(sizes) if sizes else 0
    p99 = stats.get(("realtime", big, "steady"), {}).get("p99")
    add("p99 ms at 2 events/s", f"{big:,}", p99, "< 100", None if p99 is None else p99 < 100)
    # the absolute goals were set on a machine where the floor costs 4-5 µs at 5,000: what
    # the floor measures here, in the same run, says how fast this machine is
    for what, n, mode, field, calibration in (
        ("floor's p99 ms at 2 events/s", big, "steady", "p99", "no calibration given"),
        ("floor's CPU µs/delivery", 5000, "steady", "cpu", "issue's machine: 4-5"),
    ):
        value = stats.get(("floor", n, mode), {}).get(field)
        if value is not None:
            rows.append(f"| {what} (context) | {n:,} | {value:,.2f} | {calibration} | — |")
    rss = [s["rss"] for (t, _, _), s in stats.items() if t == "realtime" and s["rss"] is not None]
    worst_rss = max(rss) if rss else None
    add(
        "idle KB/connection",
        "worst",
        worst_rss,
        "≤ 12",
        None if worst_rss is None else worst_rss <= 12,
    )
    ours_rows = [s for (t, _, _), s in stats.items() if t == "realtime"]
    lost = sum(s["lost"] for s in ours_rows) if ours_rows else None
    add("lost events, all runs", "all", lost, "0", None if lost is None else lost == 0)
    return "\n".join(rows)


def plot(stats: dict[Key, dict[str, Any]], path: Path) -> None:
    """CPU µs/delivery (burst and steady) and p99 (steady) against N, one line per target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax3, ax2) = plt.subplots(1, 3, figsize=(15, 4.2))
    panels = ((ax1, "burst", "cpu"), (ax3, "steady", "cpu"), (ax2, "steady", "p99"))
    for target in ORDER:
        for ax, mode, field in panels:
            points = sorted(
                (n, s[field]) for (t, n, m), s in stats.items()
                if t == target and m == mode and s[field] is not None
            )  # fmt: skip
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(
                    xs, ys, marker="o", label=target, linewidth=2.5 if target == "realtime" else 1.2
                )
    ax1.set(
        title="Server CPU per delivery (max burst)", xlabel="connections", ylabel="µs", yscale="log"
    )
    ax2.set(
        title="p99 publish→receive (2 events/s)", xlabel="connections", ylabel="ms", yscale="log"
    )
    ax3.set(
        title="Server CPU per delivery (2 events/s)",
        xlabel="connections",
        ylabel="µs",
        yscale="log",
    )
    for ax in (ax1, ax3, ax2):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render(doc: dict[str, Any], doc_path: Path = DOC, plot_path: Path = PLOT) -> None:
    """Replace the generated block of PERFORMANCE.md and redraw the plot."""
    stats = medians(doc["rows"])
    versions = ", ".join(f"{k} {v}" for k, v in doc["versions"].items())
    plan = doc["plan"]
    parts = [
        BEGIN,
        f"_Generated by `python -m bench.run --{doc['mode']}` at {doc['stamp']} "
        f"(sizes {list(plan['sizes'])}, {plan['reps']} repetition(s), steady "
        f"{plan['steady_events']} events at {plan['steady_rate']:g}/s, burst up to "
        f"{plan['burst_events']} events). Versions: {versions}._"
        + (
            f" Rows of targets not in this run ({', '.join(sorted(others))}) come from the run "
            f"of {', '.join(doc['merged'])}."
            if (others := {r["target"] for r in doc["rows"]} - set(plan["targets"]))
            and doc.get("merged")
            else ""
        ),
        "",
        "### Targets (our server)",
        "",
        targets_table(stats),
        "",
        "### All runs (medians)",
        "",
        results_table(stats),
        "",
        f"![CPU per delivery and p99 against N]({plot_path.name})",
    ]
    if doc.get("failures"):
        parts += ["", "Not measured in this run: " + "; ".join(doc["failures"])]
    parts.append(END)
    block = "\n".join(parts)
    text = doc_path.read_text() if doc_path.exists() else f"# Performance\n\n{BEGIN}\n{END}\n"
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    doc_path.write_text(head + block + tail)
    if stats:
        plot(stats, plot_path)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else ROOT / "bench" / "results" / "full.json"
    render(json.loads(path.read_text()))
    print(f"rendered {DOC} and {PLOT} from {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
