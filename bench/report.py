"""Summaries of runs, the targets (``TARGETS``), and the table (plain text or Markdown)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.common import summarize


@dataclass(frozen=True)
class Target:
    shape: str
    metric: str
    bound: float
    higher_is_better: bool
    label: str

    def met(self, value: float) -> bool:
        return value >= self.bound if self.higher_is_better else value <= self.bound

    def gap(self, value: float) -> str:
        """How far ``value`` is from the bound, as a factor (``3.2x short``) or ``met``."""
        if self.met(value):
            return "met"
        factor = self.bound / value if self.higher_is_better else value / self.bound
        return f"missed {factor:.1f}x"


TARGETS = (
    Target("embedded.drain_20k_c4", "drain_per_s", 7_000, True, ">= 7,000/s"),
    Target("procfile.drain_20k_c4", "drain_per_s", 5_000, True, ">= 5,000/s"),
    Target("embedded.drain_20k_c4", "producer_submit_per_s", 8_000, True, ">= 8,000/s"),
    Target("embedded.idle_latency", "start_p50_ms", 0.5, False, "<= 0.5 ms"),
    Target("embedded.idle_latency", "start_p99_ms", 2.0, False, "<= 2 ms"),
    Target("embedded.e2e_1000_c8", "tasks_per_s", 5_000, True, ">= 5,000/s"),
    Target("embedded.submit_batch_1000", "batch_tasks_per_s", 100_000, True, ">= 100,000/s"),
    Target("embedded.preempt", "first_victim_p99_ms", 5.0, False, "<= 5 ms"),
    Target("procfile.preempt", "first_victim_p99_ms", 5.0, False, "<= 5 ms"),
    Target("embedded.drain_20k_c4", "rss_mb", 80.0, False, "<= 80 MB"),
)

HIDDEN = ("_max_ms", "fill_s", "batch_first_tasks_per_s", "peak_rss_mb", "others_cpu_pct")
"""Kept in the JSON, left out of the table (``peak_rss_mb`` is shown for the drain only)."""


def target_for(shape: str, metric: str) -> Target | None:
    for t in TARGETS:
        if t.shape == shape and t.metric == metric:
            return t
    return None


def summarise_shape(runs: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    metrics: dict[str, list[float]] = {}
    for run in runs:
        for name, value in run.items():
            metrics.setdefault(name, []).append(value)
    return {name: summarize(values) for name, values in metrics.items()}


def _shown(name: str, summary: dict[str, float]) -> bool:
    if any(name.endswith(h) for h in HIDDEN):
        return False
    return not (name == "events_missed" and summary["max"] == 0)


def _fmt(value: float, metric: str) -> str:
    if metric.endswith(("_ms", "_us")):
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    if metric.endswith("_mb"):
        return f"{value:,.1f}"
    return f"{value:,.0f}"


def rows(shapes: dict[str, Any]) -> list[list[str]]:
    """One row per shown metric: shape, metric, median, min-max, runs, target, verdict."""
    out = []
    for name, entry in shapes.items():
        if entry.get("error") and not entry.get("summary"):
            out.append([name, "FAILED", "", "", "0", "", entry["error"][:60]])
            continue
        for metric, s in entry["summary"].items():
            if not _shown(metric, s):
                continue
            # A run confined to a CPU set (``name@cpus=0``) is shown, but judged only free.
            target = None if "@" in name else target_for(name, metric)
            out.append(
                [
                    name,
                    metric,
                    _fmt(s["median"], metric),
                    f"{_fmt(s['min'], metric)}-{_fmt(s['max'], metric)}",
                    str(int(s["n"])),
                    target.label if target else "",
                    target.gap(s["median"]) if target else "",
                ]
            )
    return out


HEADER = ["shape", "metric", "median", "min-max", "runs", "target", "verdict"]


def text_table(table: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [HEADER, *table]) for i in range(len(HEADER))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(HEADER, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for r in table:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return "\n".join(lines)


def markdown_table(table: list[list[str]]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(r) + " |" for r in table]
    return "\n".join(lines)
