"""The reliability decomposition y(t) = mu t + sigma xi(t), measured from journals.

t counts finished boundary crossings; each adds an increment s in {+1, 0, -1} to y:
+1 a commit the judge calls correct, -1 a commit it calls incorrect, 0 no commit (aborted,
denied, failed) or a commit a saga compensated. mu = E[s] is the drift (architectural
momentum), sigma = sd(s) the per-crossing volatility, xi a standardized random walk.
See docs/reliability.md for the definition and the estimators.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from threshold.runtime import HUMAN_VERIFIER
from threshold.store import (
    TERMINAL_CROSSING_STATUSES,
    CrossingRecord,
    EventRecord,
    Store,
    VerdictRecord,
)

Judge = Callable[[CrossingRecord, Sequence[VerdictRecord]], bool]
"""``judge(crossing, its verdicts) -> bool``: is this committed crossing correct?"""

Kind = Literal["correct", "incorrect", "neutral", "undone"]
VALUE: dict[str, int] = {"correct": 1, "incorrect": -1, "neutral": 0, "undone": 0}


def verified(crossing: CrossingRecord, verdicts: Sequence[VerdictRecord]) -> bool:
    """The default judge: the commit carries an accept from every declared verifier (or a
    human) for the exact hash committed, as ``threshold.audit`` counts it."""
    accepted = {v.verifier for v in verdicts
                if v.verdict == "accept" and v.proposal_hash == crossing.committed_hash}
    required = {name for name, _ in crossing.verifiers}
    return required <= accepted or HUMAN_VERIFIER in accepted


@dataclass(frozen=True, slots=True)
class Increment:
    """One finished crossing's contribution to y."""

    at: str
    run_id: str
    crossing_id: str
    kind: Kind

    @property
    def value(self) -> int:
        return VALUE[self.kind]


def compensated(events: Sequence[EventRecord], crossings: Sequence[CrossingRecord]) -> set[str]:
    """Crossings a saga undid: a ``saga.compensate`` ok whose key is under the crossing's id
    (a saga step's key for ``saga.cross`` is ``<crossing_id>/<action>``)."""
    ids_by_run: dict[str, list[str]] = defaultdict(list)
    for c in crossings:
        ids_by_run[c.run_id].append(c.crossing_id)
    undone: set[str] = set()
    for e in events:
        if e.kind != "saga.compensate" or e.data.get("status") != "ok":
            continue
        key = str(e.data.get("key", ""))
        undone.update(cid for cid in ids_by_run.get(e.run_id or "", [])
                      if key.startswith(cid + "/"))
    return undone


async def increments(store: Store, *, run_id: str | None = None,
                     judge: Judge | None = None) -> list[Increment]:
    """Every finished crossing as an increment, in the order they ended."""
    judge = judge or verified
    crossings = [c for c in await store.list_crossings(run_id)
                 if c.status in TERMINAL_CROSSING_STATUSES]
    verdicts: dict[str, list[VerdictRecord]] = defaultdict(list)
    for v in await store.list_verdicts(run_id):
        verdicts[v.crossing_id].append(v)
    undone = compensated(await store.list_events(run_id), crossings)
    out = []
    for c in crossings:
        kind: Kind
        if c.status != "committed":
            kind = "neutral"
        elif c.crossing_id in undone:
            kind = "undone"
        else:
            kind = "correct" if judge(c, verdicts[c.crossing_id]) else "incorrect"
        out.append(Increment(c.ended_at or c.started_at, c.run_id, c.crossing_id, kind))
    out.sort(key=lambda i: (i.at, i.crossing_id))
    return out


@dataclass(frozen=True, slots=True)
class Estimate:
    """mu and sigma of one series (a run, or all runs pooled) with confidence intervals."""

    scope: str
    n: int
    y: int
    mu: float
    mu_low: float
    mu_high: float
    sigma: float
    sigma_low: float
    sigma_high: float
    correct: int
    incorrect: int
    neutral: int
    undone: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def z_value(confidence: float) -> float:
    return statistics.NormalDist().inv_cdf((1 + confidence) / 2)


def _moments(values: Sequence[int]) -> tuple[float, float, float]:
    """Mean, sample variance and the fourth central moment."""
    n = len(values)
    mu = sum(values) / n
    var = sum((v - mu) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    m4 = sum((v - mu) ** 4 for v in values) / n
    return mu, var, m4


def estimate_series(scope: str, kinds: Sequence[Kind], confidence: float = 0.95,
                    *, mu_se: float | None = None) -> Estimate:
    """Point estimates from the sample; intervals from a normal approximation for mu (or
    the given standard error) and the delta method for sigma (fourth central moment, so it
    holds for a three-valued s). Standard errors are taken over the sample plus one +1 and
    one -1 pseudo-observation, so a run without a single failure still gets an honest,
    non-zero interval (the idea of Agresti and Coull's interval)."""
    values = [VALUE[k] for k in kinds]
    counts = {k: sum(1 for x in kinds if x == k) for k in VALUE}
    n = len(values)
    if n < 2:
        mu = float(values[0]) if values else 0.0
        return Estimate(scope, n, sum(values), mu, -1.0, 1.0, 0.0, 0.0, 1.0, counts["correct"],
                        counts["incorrect"], counts["neutral"], counts["undone"])
    z = z_value(confidence)
    mu, var, _ = _moments(values)
    sigma = math.sqrt(var)
    se_mu, se_sigma = _standard_errors(values)
    se_mu = se_mu if mu_se is None else mu_se
    return Estimate(
        scope, n, sum(values), mu, max(-1.0, mu - z * se_mu), min(1.0, mu + z * se_mu),
        sigma, max(0.0, sigma - z * se_sigma), min(1.0, sigma + z * se_sigma),
        counts["correct"], counts["incorrect"], counts["neutral"], counts["undone"])


def _standard_errors(values: Sequence[int]) -> tuple[float, float]:
    """(se of the mean, se of the standard deviation) of ``values``, both over the sample
    widened by a +1 and a -1 pseudo-observation."""
    n = len(values)
    _, var, m4 = _moments([*values, 1, -1])
    se_sigma = math.sqrt(max(m4 - var * var, 0.0) / n) / (2 * math.sqrt(var))
    return math.sqrt(var / n), se_sigma


def pooled_se(by_run: Mapping[str, Sequence[Kind]]) -> float:
    """The wider of the i.i.d. and the run-clustered standard errors of pooled mu: runs of
    one agent share inputs and code, so their crossings need not be independent."""
    series = [[VALUE[k] for k in kinds] for kinds in by_run.values() if kinds]
    values = [v for s in series for v in s]
    n = len(values)
    if n < 2:
        return 1.0
    mu = sum(values) / n
    iid, _ = _standard_errors(values)
    runs = len(series)
    if runs < 2:
        return iid
    spread = sum((sum(s) - mu * len(s)) ** 2 for s in series)
    return max(iid, math.sqrt(runs / (runs - 1) * spread) / n)


def lag1(by_run: Mapping[str, Sequence[Kind]]) -> float | None:
    """Lag-1 autocorrelation of s within runs: near 0 when xi is a random walk."""
    values = [VALUE[k] for kinds in by_run.values() for k in kinds]
    if len(values) < 3:
        return None
    mu = sum(values) / len(values)
    denominator = sum((v - mu) ** 2 for v in values)
    pairs = [(VALUE[a], VALUE[b]) for kinds in by_run.values()
             for a, b in itertools.pairwise(kinds)]
    if not pairs or denominator == 0:
        return None  # one crossing per run, or no variation: nothing to correlate
    covariance = sum((a - mu) * (b - mu) for a, b in pairs) / len(pairs)
    return covariance / (denominator / len(values))


@dataclass(frozen=True, slots=True)
class ReliabilityReport:
    """Pooled and per-run estimates, and the pooled trajectory y(t) for plotting."""

    confidence: float
    pooled: Estimate
    runs: tuple[Estimate, ...]
    lag1: float | None
    trajectory: tuple[int, ...]
    judge: str

    def to_dict(self) -> dict[str, Any]:
        return {"confidence": self.confidence, "judge": self.judge,
                "pooled": self.pooled.to_dict(), "lag1_autocorrelation": self.lag1,
                "runs": [r.to_dict() for r in self.runs]}

    def render_text(self, *, max_runs: int = 20) -> str:
        p, pct = self.pooled, round(self.confidence * 100)
        lines = [
            f"y(t) = mu t + sigma xi(t) over {p.n} crossing(s) in {len(self.runs)} run(s) "
            f"(judge: {self.judge})",
            f"  y(T) = {p.y}: {p.correct} correct, {p.incorrect} incorrect, {p.neutral} "
            f"not committed, {p.undone} compensated",
            f"  mu    = {p.mu:+.4f}  [{p.mu_low:+.4f}, {p.mu_high:+.4f}] ({pct}% CI)",
            f"  sigma = {p.sigma:.4f}  [{p.sigma_low:.4f}, {p.sigma_high:.4f}]",
        ]
        if self.lag1 is not None:
            lines.append(f"  lag-1 autocorrelation of s within runs: {self.lag1:+.3f}")
        if self.runs:
            lines.append(f"  per run (first {min(max_runs, len(self.runs))}):")
        for r in self.runs[:max_runs]:
            lines.append(f"    {r.scope:<28} n={r.n:<4} mu={r.mu:+.3f} "
                         f"[{r.mu_low:+.3f}, {r.mu_high:+.3f}] sigma={r.sigma:.3f}")
        return "\n".join(lines)


def report_from(steps: Sequence[Increment], *, confidence: float = 0.95,
                judge: str = "verified") -> ReliabilityReport:
    """Estimate mu and sigma per run and pooled from increments (pure; no store)."""
    by_run: dict[str, list[Kind]] = defaultdict(list)
    for s in steps:
        by_run[s.run_id].append(s.kind)
    runs = tuple(estimate_series(run_id, kinds, confidence)
                 for run_id, kinds in sorted(by_run.items()))
    kinds = [s.kind for s in steps]
    pooled = estimate_series("pooled", kinds, confidence, mu_se=pooled_se(by_run))
    trajectory, y = [], 0
    for s in steps:
        y += s.value
        trajectory.append(y)
    return ReliabilityReport(confidence, pooled, runs, lag1(by_run), tuple(trajectory), judge)


async def estimate_reliability(store: Store, *, run_id: str | None = None,
                               judge: Judge | None = None,
                               confidence: float = 0.95) -> ReliabilityReport:
    """Estimate mu and sigma from a store's journal (one run, or all runs)."""
    steps = await increments(store, run_id=run_id, judge=judge)
    name = "verified" if judge is None else getattr(judge, "__name__", type(judge).__name__)
    return report_from(steps, confidence=confidence, judge=name)
