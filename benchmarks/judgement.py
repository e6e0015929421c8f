"""Watch's judgement on simulated real traffic: false rollbacks, detection, time to detect.

An independent simulator drives `modelctl.analysis.Judge` exactly as `watch` does: a poll every
30 s of cumulative counters (requests, errors, latency histogram buckets) per version, template
defaults, for two-hour canaries. Each row runs healthy canaries (false rollbacks) and regressed
ones (detection) through three judges on the same streams:

- modelctl: the Judge (rollback at the first poll that says so);
- z-test: a fixed-n one-sided two-proportion z-test (alpha 1 %) on the two hours' totals, judged
  once at the end (errors; latency rows: requests slower than the control's p95);
- naive: "canary rate > 2x the registered baseline at any poll" (from 100 canary requests on),
  the registered baseline being the candidate's own in the `candidate-baseline` row.

Scenarios: iid; diurnal drift on both versions; a shared 2-minute provider blip (20 % errors);
per-version bursts (per-minute gamma noise, CV 0.3); a stale registered baseline (true rate 1.5x the
registered one on both versions); heavy-tailed latency (90 % lognormal 700 ms + 10 % lognormal
2.5 s, Prometheus buckets); a ramp 1 -> 50 % with a shared blip during the ramp; a candidate that
registers 2x its true error rate; a segment regression (10 % of traffic, 1 % -> 6 %); a late
regression (starts after 60 min); one of four control replicas restarting (summed counters drop).
Regressed canaries have twice the errors (1 % -> 2 %) unless the row says otherwise.

    python benchmarks/judgement.py                     # 1,000 healthy + 500 regressed per row
    python benchmarks/judgement.py --quick             # 200 + 100
    python benchmarks/judgement.py --markdown out.md   # also write the table as Markdown
    python benchmarks/judgement.py --jobs 2            # rows in two processes (the same table)

Seeded: the same arguments print the same table. Uses numpy to draw the traffic when it is
installed (it is not a dependency of modelctl), plain `random` otherwise (slower).
"""
from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from modelctl.analysis import ROLLBACK, SRM_HOLD, AnalysisConfig, Judge  # noqa: E402
from modelctl.observation import Counters, Poll, Reading  # noqa: E402

try:
    import numpy as np
except ImportError:  # pragma: no cover - the pure-Python path
    np = None

POLL = 30.0
POLLS = 240  # two hours
RATES = (0.05, 1.0, 5.0, 50.0)
P = 0.01
BOUNDS = (100.0, 250.0, 500.0, 750.0, 1000.0, 1500.0, 2000.0, 3000.0, 5000.0, 10000.0, math.inf)
Z_ALPHA = 2.3263  # one-sided 1 %


@dataclass
class Scenario:
    """How one row's traffic behaves."""

    name: str
    what: str
    regression: str = "2x errors"
    percent: float = 5.0
    latency: bool = False
    segments: bool = False
    diurnal: bool = False
    blip: bool = False
    bursts: bool = False
    stale: bool = False
    ramp: bool = False
    candidate_baseline: bool = False
    late: bool = False
    restart: bool = False
    healthy: bool = True  # run healthy canaries for this row


SCENARIOS = [
    Scenario("iid", "independent requests"),
    Scenario("diurnal", "traffic and error rate drift on both versions (+-50 % over 4 h)", diurnal=True),
    Scenario("blip", "shared 2-minute provider blip (20 % errors on both)", blip=True),
    Scenario("bursts", "per-version bursty errors (per-minute CV 0.3)", bursts=True),
    Scenario("stale-baseline", "true rate 1.5x the registered one, both versions", stale=True),
    Scenario("latency", "heavy-tailed latency; regressed: every request 30 % slower (p95 +30 %)",
             regression="latency x1.3", latency=True),
    Scenario("ramp", "ramp 1 -> 50 % in 10-min steps, a shared 2-minute blip in the ramp", ramp=True, blip=True),
    Scenario("candidate-baseline", "the candidate registers 2x its true error rate", candidate_baseline=True),
    Scenario("segment", "two segments; regressed: 10 % of traffic 1 % -> 6 %", regression="segment 1->6 %",
             segments=True),
    Scenario("late", "regression starts after 60 min", late=True, healthy=False),
    Scenario("restart", "one of four control replicas restarts (summed counters drop)", restart=True),
]


# --------------------------------------------------------------------------- traffic


class Draw:
    """Random draws: numpy when available, else the standard library."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed) if np is not None else None
        self.py = random.Random(seed)

    def poisson(self, lam):
        if self.rng is not None:
            return self.rng.poisson(lam).tolist()
        return [_poisson(self.py, x) for x in lam]

    def binomial(self, n, p):
        if self.rng is not None:
            return self.rng.binomial(n, np.clip(p, 0, 1)).tolist()
        return [_binomial(self.py, a, b) for a, b in zip(n, p)]

    def gamma(self, cv, size):
        if self.rng is not None:
            return self.rng.gamma(1 / cv ** 2, cv ** 2, size).tolist()
        return [self.py.gammavariate(1 / cv ** 2, cv ** 2) for _ in range(size)]

    def multinomial(self, n, probs):
        if self.rng is not None:
            return self.rng.multinomial(n, probs).tolist()
        counts = [0] * len(probs)
        cum = []
        acc = 0.0
        for q in probs:
            acc += q
            cum.append(acc)
        for _ in range(n):
            u = self.py.random()
            for i, c in enumerate(cum):
                if u <= c:
                    counts[i] += 1
                    break
        return counts

    def uniform_int(self, lo, hi):
        return self.py.randint(lo, hi)


def _poisson(rng, lam):
    if lam > 50:
        return max(0, int(round(rng.gauss(lam, math.sqrt(lam)))))
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p < limit:
            return k
        k += 1


def _binomial(rng, n, p):
    p = min(max(p, 0.0), 1.0)
    lam = n * p
    if lam < 30:
        return min(n, _poisson(rng, lam))
    return min(n, max(0, int(round(rng.gauss(lam, math.sqrt(lam * (1 - p)))))))


def _lognormal_cdf(x, median, sigma):
    if x <= 0:
        return 0.0
    if math.isinf(x):
        return 1.0
    return 0.5 * (1 + math.erf(math.log(x / median) / (sigma * math.sqrt(2))))


def bucket_probs(scale: float) -> list[float]:
    """Probability of each bucket (not cumulative) for the latency mixture scaled by `scale`."""
    cdf = [0.9 * _lognormal_cdf(b / scale, 700, 0.35) + 0.1 * _lognormal_cdf(b / scale, 2500, 0.5) for b in BOUNDS]
    probs = [cdf[0]] + [cdf[i] - cdf[i - 1] for i in range(1, len(cdf))]
    return [max(0.0, q) for q in probs]


PROBS = {1.0: bucket_probs(1.0), 1.3: bucket_probs(1.3)}


@dataclass
class Stream:
    """One canary's per-interval traffic for both versions (lists of length POLLS)."""

    percent: list[float]
    segs: dict[str, dict[str, list[int]]] = field(default_factory=dict)  # "seg|version|quantity" style
    buckets: dict[str, list[list[int]]] = field(default_factory=dict)  # version -> per-interval bucket counts
    onset: int = 0
    restart_at: int | None = None


def make_stream(sc: Scenario, rps: float, regressed: bool, draw: Draw) -> Stream:
    """Draw one canary's two hours of traffic."""
    n = POLLS
    t = [(i + 0.5) * POLL for i in range(n)]
    if sc.ramp:
        steps = [1.0, 2.0, 5.0, 10.0, 25.0, 50.0]
        percent = [steps[min(len(steps) - 1, int(x // 600))] for x in t]
        total = rps * 100 / 1.0  # the row's rate is the canary's at the first step
    else:
        percent = [sc.percent] * n
        total = rps * 100 / sc.percent
    load = [1.0] * n
    rate = [P * (1.5 if sc.stale else 1.0)] * n
    if sc.diurnal:
        phase = draw.py.random() * 2 * math.pi
        load = [1 + 0.5 * math.sin(2 * math.pi * x / 14400 + phase) for x in t]
        rate = [r * (1 + 0.5 * math.sin(2 * math.pi * x / 14400 + phase + 1.0)) for r, x in zip(rate, t)]
    rate0 = list(rate)
    rate1 = list(rate)
    onset = 0
    if sc.late:
        onset = 120
    if regressed and sc.regression == "2x errors":
        rate1 = [r * 2 if i >= onset else r for i, r in enumerate(rate1)]
    if sc.bursts:
        for which in (rate0, rate1):
            g = draw.gamma(0.3, n // 2 + 1)
            for i in range(n):
                which[i] *= g[i // 2]
    if sc.blip:
        lo, hi = (20, 100) if sc.ramp else (4, n - 8)
        at = draw.uniform_int(lo, hi)
        for i in range(at, at + 4):
            rate0[i] = rate1[i] = 0.2
    req1 = draw.poisson([total * pc / 100 * POLL * ld for pc, ld in zip(percent, load)])
    req0 = draw.poisson([total * (100 - pc) / 100 * POLL * ld for pc, ld in zip(percent, load)])
    stream = Stream(percent=percent, onset=onset)
    if sc.segments:
        # segment "s10" carries 10 % of each version's requests
        s1 = draw.binomial(req1, [0.1] * n)
        s0 = draw.binomial(req0, [0.1] * n)
        seg_rate1 = [0.06] * n if regressed else rate1
        e1s = draw.binomial(s1, seg_rate1)
        e0s = draw.binomial(s0, rate0)
        r1 = [a - b for a, b in zip(req1, s1)]
        r0 = [a - b for a, b in zip(req0, s0)]
        e1r = draw.binomial(r1, rate1)
        e0r = draw.binomial(r0, rate0)
        stream.segs = {
            "s10": {"c_req": s1, "c_err": e1s, "k_req": s0, "k_err": e0s},
            "rest": {"c_req": r1, "c_err": e1r, "k_req": r0, "k_err": e0r},
            "": {"c_req": req1, "c_err": [a + b for a, b in zip(e1s, e1r)],
                 "k_req": req0, "k_err": [a + b for a, b in zip(e0s, e0r)]},
        }
    else:
        stream.segs = {"": {"c_req": req1, "c_err": draw.binomial(req1, rate1),
                            "k_req": req0, "k_err": draw.binomial(req0, rate0)}}
    if sc.latency:
        slow = 1.3 if regressed else 1.0
        stream.buckets = {"c": [draw.multinomial(x, PROBS[slow]) for x in req1],
                          "k": [draw.multinomial(x, PROBS[1.0]) for x in req0]}
    if sc.restart:
        stream.restart_at = draw.uniform_int(10, n - 10)
    return stream


# --------------------------------------------------------------------------- judging


@dataclass
class Outcome:
    """What each judge made of one canary."""

    rollback_poll: int | None = None
    canary_requests: int = 0
    srm_hold: bool = False
    z_rollback: bool = False
    naive_rollback: bool = False


def judge_stream(sc: Scenario, stream: Stream, config: AnalysisConfig, prior: dict, naive_base: float) -> Outcome:
    """Feed one stream to the Judge poll by poll; run the z-test and the naive rule on the same data."""
    judge = Judge(config, prior=prior, keep_trace=False)
    segs = stream.segs
    names = list(segs)
    # exporter history before the canary: counters never start at zero
    cum = {(s, q): (10 ** 6 if q.startswith("k") else 0) for s in names for q in segs[s]}
    cum_b = {"c": [0] * len(BOUNDS), "k": [10 ** 5] * len(BOUNDS)}
    offset_k = {s: 0 for s in names}  # restarted replica: what the sum lost
    out = Outcome()
    base = segs[""]
    latency = bool(stream.buckets)
    if not latency:
        # the z-test on the totals and the naive rule at every poll: plain sums, no Judge involved
        tot = {q: sum(base[q]) for q in ("c_req", "c_err", "k_req", "k_err")}
        out.z_rollback = _z(tot["c_err"], tot["c_req"], tot["k_err"], tot["k_req"]) > Z_ALPHA
        canary_n = canary_x = 0
        for n, x in zip(base["c_req"], base["c_err"]):
            canary_n += n
            canary_x += x
            if canary_n >= 100 and canary_x / canary_n > 2 * naive_base:
                out.naive_rollback = True
                break
    canary_n = 0
    for i in range(POLLS + 1):
        if i:
            j = i - 1
            for s in names:
                d = segs[s]
                for q in ("c_req", "c_err", "k_req", "k_err"):
                    cum[(s, q)] += d[q][j]
            if latency:
                for v in ("c", "k"):
                    acc = 0
                    row = cum_b[v]
                    for b, c in enumerate(stream.buckets[v][j]):
                        acc += c
                        row[b] += acc
            if stream.restart_at == i:
                for s in names:  # one of four replicas restarts: its quarter of the history is gone
                    offset_k[s] = (cum[(s, "k_req")] // 4, cum[(s, "k_err")] // 4)
            canary_n += base["c_req"][j]
        readings_c, readings_k = {}, {}
        for s in names:
            lost = offset_k[s] if stream.restart_at is not None and i >= stream.restart_at else (0, 0)
            kb = ()
            cb = ()
            if latency and s == "":
                cb = tuple(zip(BOUNDS, cum_b["c"]))
                kb = tuple(zip(BOUNDS, cum_b["k"]))
            readings_c[s] = Counters(requests=cum[(s, "c_req")], events={"errors": cum[(s, "c_err")]},
                                     latency_buckets=cb)
            readings_k[s] = Counters(requests=cum[(s, "k_req")] - lost[0],
                                     events={"errors": cum[(s, "k_err")] - lost[1]}, latency_buckets=kb)
        poll = Poll(time=i * POLL, control="1.0.0", canary="1.1.0", percent=stream.percent[max(0, i - 1)],
                    readings={"1.0.0": Reading(segments=readings_k), "1.1.0": Reading(segments=readings_c)})
        decision = judge.observe(poll)
        if decision.action == ROLLBACK:
            out.rollback_poll = i
            out.canary_requests = canary_n
            break
        if decision.action == SRM_HOLD:
            out.srm_hold = True
            break
    if latency:
        # the latency judges need the whole two hours' histograms, not only what the Judge read
        for j in range(i + 1, POLLS + 1):  # the polls after the one the Judge stopped at
            for v in ("c", "k"):
                acc = 0
                row = cum_b[v]
                for b, c in enumerate(stream.buckets[v][j - 1]):
                    acc += c
                    row[b] += acc
        # requests slower than the control's p95 (interpolated from its buckets), totals of the canary
        kd = [c - 10 ** 5 for c in cum_b["k"]]
        cd = cum_b["c"]
        from modelctl.analysis import count_above, histogram_quantile
        kbk = tuple(zip(BOUNDS, kd))
        tau = histogram_quantile(0.95, kbk)
        x1, n1 = count_above(tau, tuple(zip(BOUNDS, cd))), cd[-1]
        x0, n0 = count_above(tau, kbk), kd[-1]
        out.z_rollback = _z(x1, n1, x0, n0) > Z_ALPHA
        # naive on latency: canary p95 > 1.2x the control's at any poll is the old rule; at the end here
        p95c = histogram_quantile(0.95, tuple(zip(BOUNDS, cd)))
        out.naive_rollback = bool(p95c and tau and p95c > 1.2 * tau)
    return out


def _z(x1, n1, x0, n0) -> float:
    if n1 <= 0 or n0 <= 0:
        return 0.0
    p = (x1 + x0) / (n1 + n0)
    se = math.sqrt(p * (1 - p) * (1 / n1 + 1 / n0)) if 0 < p < 1 else 0.0
    return (x1 / n1 - x0 / n0) / se if se > 0 else 0.0


def wilson_upper(k: int, n: int, z: float = 1.96) -> float:
    """Upper end of the Wilson 95 % interval for k successes in n."""
    if n == 0:
        return 1.0
    p = k / n
    centre = p + z * z / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return min(1.0, (centre + half) / (1 + z * z / n))


@dataclass
class Row:
    scenario: str
    rps: float
    regression: str
    healthy: int = 0
    false_rb: int = 0
    srm: int = 0
    z_fa: int = 0
    naive_fa: int = 0
    regressed: int = 0
    detected: int = 0
    z_det: int = 0
    naive_det: int = 0
    requests: list[int] = field(default_factory=list)
    minutes: list[float] = field(default_factory=list)


def run_row(sc: Scenario, rps: float, healthy: int, regressed: int, seed: int, config: AnalysisConfig) -> Row:
    """Run one row: healthy then regressed canaries."""
    row = Row(sc.name, rps, sc.regression)
    serving = {"error_rate": P}  # the serving version's registered baseline
    naive_base = 2 * P if sc.candidate_baseline else P
    draw = Draw(seed)
    for _ in range(healthy if sc.healthy else 0):
        out = judge_stream(sc, make_stream(sc, rps, False, draw), config, serving, naive_base)
        row.healthy += 1
        row.false_rb += out.rollback_poll is not None
        row.srm += out.srm_hold
        row.z_fa += out.z_rollback
        row.naive_fa += out.naive_rollback
    for _ in range(regressed):
        stream = make_stream(sc, rps, True, draw)
        out = judge_stream(sc, stream, config, serving, naive_base)
        row.regressed += 1
        row.z_det += out.z_rollback
        row.naive_det += out.naive_rollback
        if out.rollback_poll is not None and out.rollback_poll > stream.onset:
            row.detected += 1
            row.requests.append(out.canary_requests)
            row.minutes.append((out.rollback_poll - stream.onset) * POLL / 60)
    return row


def _timed_row(*args) -> tuple[Row, float]:
    t0 = time.perf_counter()
    return run_row(*args), time.perf_counter() - t0


def pct(k: int, n: int) -> str:
    return "-" if n == 0 else f"{100 * k / n:.1f}"


def render(rows: list[Row]) -> list[str]:
    head = ("| scenario | canary rps | healthy: false rollbacks % (upper 95 %) | srm-holds | z-test FA % | "
            "naive FA % | regression | detected % | median canary requests | median min to detect | "
            "z-test detected % | naive detected % |")
    lines = [head, "|" + " --- |" * 12]
    for r in rows:
        fa = "-" if not r.healthy else f"{pct(r.false_rb, r.healthy)} ({100 * wilson_upper(r.false_rb, r.healthy):.1f})"
        med_req = f"{statistics.median(r.requests):,.0f}" if r.requests else "-"
        med_min = f"{statistics.median(r.minutes):.1f}" if r.minutes else "-"
        lines.append(f"| {r.scenario} | {r.rps:g} | {fa} | {r.srm if r.healthy else '-'} | {pct(r.z_fa, r.healthy)} | "
                     f"{pct(r.naive_fa, r.healthy)} | {r.regression} | {pct(r.detected, r.regressed)} | {med_req} | "
                     f"{med_min} | {pct(r.z_det, r.regressed)} | {pct(r.naive_det, r.regressed)} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 healthy and 100 regressed canaries per row")
    parser.add_argument("--healthy", type=int, default=None)
    parser.add_argument("--regressed", type=int, default=None)
    parser.add_argument("--only", default=None, help="comma-separated scenario names")
    parser.add_argument("--rates", default=None, help="comma-separated canary rps (default 0.05,1,5,50)")
    parser.add_argument("--markdown", default=None, help="also write the table to this Markdown file")
    parser.add_argument("--seed", type=int, default=20261130)
    parser.add_argument("--jobs", type=int, default=1, help="rows judged in parallel processes (same table)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override an analysis setting (for tuning), e.g. --set cusum_growth=0.5")
    args = parser.parse_args(argv)
    healthy = args.healthy if args.healthy is not None else (200 if args.quick else 1000)
    regressed = args.regressed if args.regressed is not None else (100 if args.quick else 500)
    rates = tuple(float(x) for x in args.rates.split(",")) if args.rates else RATES
    only = set(args.only.split(",")) if args.only else None
    # the template defaults without the alert-only cost metric (it never rolls back, and takes no alpha)
    overrides = {k: float(v) for k, v in (item.split("=", 1) for item in args.set)}
    config = AnalysisConfig.from_section({**overrides, "metrics": {"error_rate": None, "latency": None}})
    started = time.perf_counter()
    # each row has its own seed (from its place in SCENARIOS and RATES): rows can run in any order
    # and in parallel processes and print the same table
    work = [(sc, rps, healthy, regressed, args.seed + 1000 * si + RATES.index(rps) if rps in RATES
             else args.seed + 1000 * si + 100 + ri, config)
            for si, sc in enumerate(SCENARIOS) if not only or sc.name in only
            for ri, rps in enumerate(rates)]
    if args.jobs > 1 and len(work) > 1:
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            futures = [pool.submit(_timed_row, *w) for w in work]
            rows = []
            for future in futures:
                row, seconds = future.result()
                rows.append(row)
                print(render([row])[-1], f"  ({seconds:.0f}s)", file=sys.stderr, flush=True)
    else:
        rows = []
        for w in work:
            row, seconds = _timed_row(*w)
            rows.append(row)
            print(render([row])[-1], f"  ({seconds:.0f}s)", file=sys.stderr, flush=True)
    lines = render(rows)
    fresh = {r.rps: statistics.median(r.minutes) for r in rows if r.scenario == "iid" and r.minutes}
    late = {r.rps: statistics.median(r.minutes) for r in rows if r.scenario == "late" and r.minutes}
    footer = []
    for rps in rates:
        if rps in fresh and rps in late and fresh[rps] > 0:
            footer.append(f"late / fresh median minutes to detect at {rps:g} canary rps: "
                          f"{late[rps] / fresh[rps]:.2f} ({late[rps]:.1f} / {fresh[rps]:.1f})")
    footer.append(f"{healthy} healthy and {regressed} regressed two-hour canaries per row, a poll every "
                  f"{POLL:g} s, template defaults (alpha {config.alpha:g}); "
                  f"{'numpy' if np is not None else 'random'} draws; {time.perf_counter() - started:.0f} s "
                  f"wall time, {args.jobs} process{'es' if args.jobs > 1 else ''}")
    print("\n".join(lines + [""] + footer))
    if args.markdown:
        Path(args.markdown).write_text("\n".join(lines + [""] + [f"- {f}" for f in footer]) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
