"""The figures of live_migrate_bench.py: a load log read against a migrate's window, and the markdown tables."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SETTLE = 2.0  # seconds of load before and after each measured migrate
FLOOR_S = 0.05  # locks both shorter than this: no ratio (timer and scheduling noise)
STALL_S = 0.5  # a write waiting longer than this is a stall: listed with when it began (the bound)


def events(log: Path) -> list[dict[str, Any]]:
    """The JSON lines of a load log (a line cut short by a kill left out)."""
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.endswith("}")]


def _p99_ms(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000, 1)


def summarize(log: Path, start: float, end: float) -> dict[str, Any]:
    """A load log against the migrate window [start, end]: what waited on it, what failed before/during/after."""
    logged = events(log)
    ok = [e for e in logged if e["kind"] == "ok"]
    errors = [e for e in logged if e["kind"] == "error"]
    # Touched by the window: scheduled (or begun) before it ended and committed (or answered) after it began.
    window = [e["lat"] for e in ok if e["due"] <= end and e["t"] >= start]
    # A call's own wait, from when it could begin (its due time, or the previous call's end when the writer ran
    # late) to its commit: what one request waits on the database, without the writer's own backlog.
    own, stalls, previous = [], [], 0.0
    for e in logged:
        if e["kind"] in ("ok", "error"):
            if e["kind"] == "ok" and e["due"] <= end and e["t"] >= start:
                began = max(e["due"], previous)
                own.append(e["t"] - began)
                if e["t"] - began > STALL_S:  # seconds after the migrate began: to line up with its phases
                    stalls.append({"at_s": round(began - start, 2), "wait_s": round(e["t"] - began, 2)})
            previous = e["t"]
    before = [e["lat"] for e in ok if start - SETTLE <= e["t"] < start]
    span = (logged[-1]["t"] - logged[0]["t"]) if len(logged) > 2 else 0.0
    return {
        "per_s": round((len(ok) + len(errors)) / span, 1) if span else None,
        "ok": len(ok), "window_ok": len(window),
        "max_ms": round(max(window) * 1000, 1) if window else None,
        "longest_own_ms": round(max(own) * 1000, 1) if own else None,
        "p99_own_ms": _p99_ms(own),
        "stalls": stalls,
        "p99_ms": _p99_ms(window),
        "p99_before_ms": _p99_ms(before),
        # Errors by when they happened: a writer behind its schedule would push scheduled times out of the window.
        "errors_before": sum(e["t"] < start for e in errors),
        "errors_during": sum(start <= e["t"] <= end for e in errors),
        "errors_after": sum(e["t"] > end for e in errors),
        "first_error": errors[0]["error"] if errors else "",
    }


# --- markdown -----------------------------------------------------------------------------------
def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def _row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _lock(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _ratio(predicted: float | None, measured: float | None) -> str:
    """measured / predicted; both under 50 ms is noise, not a ratio."""
    if predicted is None or measured is None:
        return "—"
    if max(predicted, measured) < FLOOR_S:
        return "both < 0.05 s"
    return "∞" if predicted == 0 else f"{measured / predicted:.2f}"


def _lost(audit: dict[str, Any] | None) -> str:
    return "—" if not audit else f"**{audit['lost']}** of {audit['committed']:,}"


def online_cells(row: dict[str, Any], plain_s: float | None) -> list[str]:
    """Our online rebuilds of one migration: (rows, chunks) each, their seconds, the longest lock one held
    (the cut-over's), and their seconds against Django's plain migrate of the same migration."""
    online = row.get("online") or []
    if row["mode"] != "ours" or not online:
        return ["—"] * 4
    seconds = sum(e["seconds"] for e in online)
    return [
        "; ".join(f"{e['table']} {e['rows']:,} r, {e['chunks']:,} ch" for e in online),
        f"{seconds:.2f}",
        f"{max(e['longest_lock_seconds'] for e in online):.3f} ({max(e['cutover_seconds'] for e in online):.3f})",
        "—" if not plain_s else f"{seconds / plain_s:.2f}",
    ]


def table(engine: str, rows: list[dict[str, Any]], failing: list[dict[str, Any]]) -> str:
    """The markdown for one engine."""
    plain_s = {row["target"]: row["seconds"] for row in rows if row["mode"] == "plain" and not row["exit"]}
    lines = [f"\n### {engine}\n", _row([
        "migration", "migrate", "s", "predicted lock s", "measured lock s", "measured / predicted",
        "online rebuilds (rows, chunks)", "online s", "longest online lock s (cut-over)", "online s / plain s",
        "writes/s", "writes in window", "**longest write wait ms**", "p99 write ms (before)",
        "**writer errors** before/during/after", "**rows lost**", "reader p99 ms", "reader errors b/d/a", "worker",
        "notes"]), _row(["---"] * 3 + ["---:"] * 3 + ["---"] + ["---:"] * 11 + ["---"] * 2)]
    for row in rows:
        w, r = row["writer"], row["reader"]
        notes = " ".join(row["flags"])
        if row["exit"]:
            notes += f" exit {row['exit']}: {row['error'][:80]}"
        if row.get("release") == "previous":
            notes += f" load: previous release (worker: {row.get('worker_code')})"
        if w["errors_before"]:
            notes += " errors before the window:"
        if w["first_error"]:
            notes += f" {w['first_error'][:70]}"
        rehearsal = row.get("rehearsal") or {}
        if rehearsal.get("error"):
            notes += f" rehearsal: {rehearsal['error'][:80]}"
        if w.get("stalls"):
            notes += " stalls (s after start: wait s): " + ", ".join(
                f"{s['at_s']:g}: {s['wait_s']:g}" for s in w["stalls"][:6])
        predicted, measured = rehearsal.get("lock_s"), row.get("measured_lock_s")
        lines.append(_row([
            row["target"], row["mode"], f"{row['seconds']:.2f}", _lock(predicted), _lock(measured),
            _ratio(predicted, measured) if row["mode"] == "ours" else "—",
            *online_cells(row, plain_s.get(row["target"])),
            w["per_s"], f"{w['window_ok']:,}", _ms(w.get("longest_own_ms")),
            f"{_ms(w['p99_ms'])} ({_ms(w['p99_before_ms'])})",
            f"{w['errors_before']}/{w['errors_during']}/{w['errors_after']}", _lost(row.get("audit")),
            _ms(r["p99_ms"]), f"{r['errors_before']}/{r['errors_during']}/{r['errors_after']}",
            "died" if row["worker_died"] else "none" if row.get("worker_code") == "none" else "ok", notes.strip()]))
    if not failing:
        return "\n".join(lines)
    lines += ["", _row(["failing plan", "status", "s", "longest lock s", "writes/s", "**longest write wait ms**",
                        "writer errors b/d/a", "committed", "**rows lost**", "**ids reused**", "reader errors",
                        "notes"]),
              _row(["---", "---"] + ["---:"] * 9 + ["---"])]
    for row in failing:
        w, a = row["writer"], row["audit"]
        lines.append(_row([
            f"migrations_fixture 0003 ({'atomic' if row['atomic'] else 'non-atomic'})",
            f"{row['status'] or row['exit']} {' '.join(row['flags'])}".strip(), f"{row['seconds']:.2f}",
            _lock(row["longest_lock_s"]), w["per_s"], _ms(w.get("longest_own_ms")),
            f"{w['errors_before']}/{w['errors_during']}/{w['errors_after']}",
            f"{row['writer']['ok']:,}", f"**{a['lost']}**", f"**{a['reused']}**",
            row["reader"]["errors_during"] + row["reader"]["errors_after"],
            (row["error"][:100] if row["exit"] == "hung" or row["exit"] == 3 else w["first_error"][:70])]))
    return "\n".join(lines)
