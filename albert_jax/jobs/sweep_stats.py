"""Seed statistics of a sweep: per-variant mean, sample standard deviation and a t-based 95% interval of each
metric over the variant's seeds, and the mean +- sd curves the plots draw as bands."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

from scipy import stats


@dataclasses.dataclass(frozen=True)
class Summary:
    """A metric over n seeds: mean, sample sd (ddof 1; 0 for one seed) and the 95% interval of the mean from
    Student's t with n - 1 degrees of freedom (None for one seed: no spread to estimate)."""

    n: int
    mean: float
    sd: float
    low: float | None
    high: float | None


def summarize(values: Sequence[float]) -> Summary | None:
    """The Summary of the values that are present (None entries are runs that did not get that far)."""
    present = [float(v) for v in values if v is not None and v != ""]
    if not present:
        return None
    n, mean = len(present), sum(present) / len(present)
    if n == 1:
        return Summary(1, mean, 0.0, None, None)
    sd = math.sqrt(sum((v - mean) ** 2 for v in present) / (n - 1))
    half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    return Summary(n, mean, sd, mean - half, mean + half)


def aggregate(rows: list[dict[str, Any]], keys: Sequence[str]) -> dict[str, dict[str, Any]]:
    """{variant: {key: Summary, 'seeds': [...], 'status': ...}} over the rows of each variant's seeds. The status
    is 'complete' only when every seed is."""
    by_variant: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_variant.setdefault(row["variant"], []).append(row)
    out = {}
    for variant, group in by_variant.items():
        statuses = {r["status"] for r in group}
        out[variant] = {key: summarize([r.get(key) for r in group]) for key in keys}
        out[variant]["seeds"] = [r.get("seed") for r in group]
        out[variant]["status"] = "complete" if statuses == {"complete"} else "/".join(sorted(statuses))
    return out


def mean_curve(curves: list[list[tuple[int, float]]]) -> tuple[list[int], list[float], list[float]]:
    """Steps logged by every curve, with the mean and the sample sd across curves at each (sd 0 for one)."""
    if not curves:
        return [], [], []
    common = sorted(set.intersection(*(set(step for step, _ in curve) for curve in curves)))
    lookups = [dict(curve) for curve in curves]
    means, sds = [], []
    for step in common:
        summary = summarize([lookup[step] for lookup in lookups])
        means.append(summary.mean)
        sds.append(summary.sd)
    return common, means, sds
