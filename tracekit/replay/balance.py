"""Load balance of a reuseport group: how evenly its sockets took decisions, and how far that is
from what hashing gives by chance.

Hash selection (`reuseport_select_sock_by_hash`: `reciprocal_scale(hash, num_socks)`) spreads
flows uniformly over the live sockets, so the load of a group chosen by hash follows a multinomial
with equal shares. Pearson's chi-square goodness-of-fit statistic against equal shares
(`scipy.stats.chisquare`, computed with `scipy.special.chdtrc`) measures the distance, and its p-value says how likely a spread at
least this uneven is by chance: a program that steers most flows to one socket gives p ~ 0,
plain hashing gives p spread over (0, 1].

The sockets counted are those alive at the end of the trace and those that took decisions. A
group whose membership changed while decisions were made (a rolling restart: `membership_changed`)
was not one uniform distribution, so its statistic only says that the load moved, not why.
"""

from __future__ import annotations

import importlib
import math
import sys
import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["balance_of", "chisquare_uniform", "mismatches_by_group", "observed_load", "SIGNIFICANT",
           "import_ahead"]

SIGNIFICANT = 6
"""Significant digits kept of each float, so the JSON stays short and byte-stable."""


def _round(value: float) -> float:
    return float(f"{value:.{SIGNIFICANT}g}")


def mismatches_by_group(kept: Iterable[Any]) -> dict[tuple[str, str | None], list[dict[str, Any]]]:
    """The mismatches among `kept` decisions, as dicts, by (host, group)."""
    out: dict[tuple[str, str | None], list[dict[str, Any]]] = {}
    for d in kept:
        if d.verdict == "mismatch":
            out.setdefault((d.host, d.group), []).append(d.as_dict())
    return out


def observed_load(load: Mapping[str, int], mismatches: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """The load as the kernel gave it: `load` counts each decided decision on the socket the
    model expected; a mismatch moves its count to the socket observed (none: dropped, reset)."""
    counts: Counter = Counter({str(sk): int(n) for sk, n in load.items()})
    for record in mismatches:
        if int(record["expected"]) >= 0:
            counts[str(int(record["expected"]))] -= 1
        if int(record["observed"]) >= 0:
            counts[str(int(record["observed"]))] += 1
    return {sk: n for sk, n in sorted(counts.items(), key=lambda kv: int(kv[0])) if n > 0}


def balance_of(load: Mapping[str, int], live: Iterable[int]) -> dict[str, Any]:
    """Balance figures of one group: sockets counted, total decisions, max and mean per socket,
    max/mean, the chi-square statistic against equal shares and its p-value (null when fewer
    than two sockets or no decisions), and whether membership changed under the load."""
    live = [int(sk) for sk in live]
    counts = {int(sk): int(n) for sk, n in load.items() if int(n) > 0}
    sockets = sorted(set(live) | set(counts))
    values = [counts.get(sk, 0) for sk in sockets]
    total = sum(values)
    figures: dict[str, Any] = {
        "sockets": len(sockets), "total": total, "max": max(values, default=0),
        "mean": _round(total / len(sockets)) if sockets else 0.0,
        "max_over_mean": None, "chi2": None, "p_value": None,
        "membership_changed": bool(set(counts) - set(live)),
    }
    if not total:
        return figures
    figures["max_over_mean"] = _round(max(values) * len(values) / total)
    if len(values) >= 2:
        statistic, p_value = chisquare_uniform(values)
        figures["chi2"] = _round(statistic)
        figures["p_value"] = _round(p_value)
    return figures


def import_ahead(loads: Iterable[Mapping[Any, int]]) -> None:
    """Start importing what `chisquare_uniform` needs (`scipy.special`, about a second of
    start-up) in a thread, so that a long replay's summary finds it loaded: the replay keeps
    the main thread busy meanwhile. Only when a group's `loads` so far (counts per socket) give
    a p-value that is not certainly 0: heavily skewed groups (a rolling restart) need no scipy."""
    if "scipy.special" in sys.modules:
        return
    if any(_p_value_if_zero(len(counts) - 1, _statistic(counts)) is None for counts in
           ([n for n in load.values() if n > 0] for load in loads) if len(counts) >= 2):
        threading.Thread(target=importlib.import_module, args=("scipy.special",),
                         name="import scipy.special").start()


def chisquare_uniform(values: list[int]) -> tuple[float, float]:
    """Pearson's statistic against equal shares and its p-value: what
    `scipy.stats.chisquare(values)` returns, from the chi-square survival function
    (`scipy.special.chdtrc`, the Cephes routine scipy.stats calls) without importing all of
    scipy.stats, which costs a replay more than a second of start-up. Where Cephes returns 0
    because the result underflows, so does this, without importing scipy at all."""
    statistic = _statistic(values)
    p_value = _p_value_if_zero(len(values) - 1, statistic)
    if p_value is None:
        from scipy.special import chdtrc

        p_value = float(chdtrc(len(values) - 1, statistic))
    return statistic, p_value


MAXLOG = 7.09782712893383996843e2
"""Cephes' log(DBL_MAX): `igam_fac` returns 0 where its logarithm is below -MAXLOG."""


def _statistic(values: list[int]) -> float:
    mean = sum(values) / len(values)
    return sum((v - mean) ** 2 for v in values) / mean


def _p_value_if_zero(df: int, statistic: float) -> float | None:
    """0.0 where `chdtrc(df, statistic)` is certainly 0, else None (ask scipy).

    chdtrc(df, x) is Cephes' igamc(a = df/2, x/2). For x > 1.1, x >= a and |x - a| > 0.4 a it
    takes the continued fraction (neither the series nor the asymptotic regime, which need x
    within 0.3 a of a), whose prefactor `igam_fac` is exactly 0 when a log(x) - x - lgam(a) <
    -MAXLOG. A margin of 1 keeps ulp differences of `math.lgamma` from Cephes' `lgam` out."""
    a, x = df / 2, statistic / 2
    if x > 1.1 and x >= a and abs(x - a) > 0.4 * a \
            and a * math.log(x) - x - math.lgamma(a) < -MAXLOG - 1:
        return 0.0
    return None
