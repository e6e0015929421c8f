"""Detection quality of watch's judgement: false rollbacks and requests needed to catch a regression.

Simulates healthy canaries (error rate 1 %) and regressed ones (2 %) next to an active version at
1 % carrying several times the canary's traffic, polls every N canary requests, and runs the real
analysis code (modelctl.analysis.Judge with the default settings) on the cumulative counts. The
naive rule "roll back when the canary rate exceeds twice the baseline at any poll" runs on the same
simulated traffic and the same baseline, for comparison. Seeded: the same arguments print the same
table.

    python benchmarks/detection.py                 # poll every 100 canary requests
    python benchmarks/detection.py --poll-every 500
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from modelctl.analysis import ROLLBACK, AnalysisConfig, Judge, Sample  # noqa: E402

GOAL_FALSE_ROLLBACKS = 0.01
GOAL_MEDIAN_REQUESTS = 2000


def binomial(rng: random.Random, n: int, p: float) -> int:
    """An exact binomial draw: inversion over chunks small enough that (1 - p)^chunk stays normal."""
    total = 0
    while n > 0:
        chunk = min(n, 1000)
        n -= chunk
        u, k, term = rng.random(), 0, (1 - p) ** chunk
        acc = term
        while u > acc and k < chunk:
            term *= (chunk - k) / (k + 1) * p / (1 - p)
            k += 1
            acc += term
        total += k
    return total


@dataclass
class Outcome:
    sequential: int | None  # canary requests at the rollback, None if never
    naive: int | None


def simulate(rng: random.Random, config: AnalysisConfig, registered: dict, canary_rate: float,
             active_rate: float, poll_every: int, horizon: int, active_share: int) -> Outcome:
    """One canary: poll until both methods rolled back or the horizon is reached."""
    judge = Judge(config)
    n = x = na = xa = 0
    sequential = naive = None
    while n < horizon and (sequential is None or naive is None):
        n += poll_every
        x += binomial(rng, poll_every, canary_rate)
        na += poll_every * active_share
        xa += binomial(rng, poll_every * active_share, active_rate)
        decision = judge.poll(Sample(requests=n, errors=x), Sample(requests=na, errors=xa), registered)
        if sequential is None and decision.action == ROLLBACK:
            sequential = n
        result = decision.results[0]
        # the naive rule sees the same baseline the sequential test uses
        if naive is None and result.baseline_value is not None and x / n > 2 * result.baseline_value:
            naive = n
    return Outcome(sequential, naive)


def summarise(healthy: list[Outcome], regressed: list[Outcome], attr: str) -> tuple[float, float, float]:
    """(false rollback rate, detection rate, median requests to detect; inf if most never detected)."""
    false_rate = sum(getattr(o, attr) is not None for o in healthy) / len(healthy)
    times = [getattr(o, attr) for o in regressed]
    detection = sum(t is not None for t in times) / len(times)
    median = statistics.median(float("inf") if t is None else t for t in times)
    return false_rate, detection, median


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--poll-every", type=int, default=100, help="canary requests between polls (default 100)")
    parser.add_argument("--canaries", type=int, default=1000, help="healthy and regressed canaries each (default 1000)")
    parser.add_argument("--horizon", type=int, default=20000, help="canary requests watched per canary (default 20000)")
    parser.add_argument("--baseline", type=float, default=0.01, help="baseline error rate (default 0.01)")
    parser.add_argument("--regressed", type=float, default=0.02, help="regressed error rate (default 0.02)")
    parser.add_argument("--active-share", type=int, default=9,
                        help="active requests per canary request (default 9: a 10%% canary)")
    parser.add_argument("--seed", type=int, default=20260501)
    args = parser.parse_args(argv)
    if args.poll_every < 1 or args.canaries < 1 or args.horizon < args.poll_every:
        parser.error("need --poll-every >= 1, --canaries >= 1 and --horizon >= --poll-every")

    config = AnalysisConfig.from_section({"metrics": {"error_rate": {"type": "rate"}}})
    spec = config.metric("error_rate")
    registered = {"error_rate": args.baseline, "requests": 12500}
    rng = random.Random(args.seed)
    started = time.perf_counter()
    common = dict(config=config, registered=registered, active_rate=args.baseline,
                  poll_every=args.poll_every, horizon=args.horizon, active_share=args.active_share)
    healthy = [simulate(rng, canary_rate=args.baseline, **common) for _ in range(args.canaries)]
    regressed = [simulate(rng, canary_rate=args.regressed, **common) for _ in range(args.canaries)]
    elapsed = time.perf_counter() - started

    rows = [
        (f"sequential (SPRT, alpha={config.alpha:g}, beta={config.beta:g}, "
         f"{config.consecutive_failures} polls)", *summarise(healthy, regressed, "sequential")),
        ("naive (rate > 2x baseline, any poll)", *summarise(healthy, regressed, "naive")),
    ]
    print(f"{args.canaries} healthy ({args.baseline:.1%}) and {args.canaries} regressed ({args.regressed:.1%}) "
          f"canaries; a poll every {args.poll_every} canary requests, up to {args.horizon}; "
          f"active traffic {args.active_share}x the canary's; "
          f"threshold max({spec.max_ratio:g} x baseline, baseline + {spec.min_delta:g}); seed {args.seed}")
    print()
    header = ("method", "false rollbacks", "detection", "median requests to detect")
    widths = (max(len(header[0]), *(len(r[0]) for r in rows)), 15, 9, 25)
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for name, false_rate, detection, median in rows:
        shown = "never" if median == float("inf") else f"{median:,.0f}"
        print("  ".join([name.ljust(widths[0]), f"{false_rate:.1%}".rjust(widths[1]),
                         f"{detection:.1%}".rjust(widths[2]), shown.rjust(widths[3])]))
    print()
    seq_false, naive_false = rows[0][1], rows[1][1]
    if seq_false > 0:
        print(f"naive / sequential false rollbacks: {naive_false / seq_false:.1f}x")
    else:
        print(f"naive / sequential false rollbacks: {naive_false:.1%} vs none")
    seq_median, naive_median = rows[0][3], rows[1][3]
    if naive_median not in (0, float("inf")):
        print(f"sequential / naive median requests to detect: {seq_median / naive_median:.1f}x")
    met_false = seq_false <= GOAL_FALSE_ROLLBACKS
    met_median = seq_median <= GOAL_MEDIAN_REQUESTS
    print(f"goals for the sequential test: false rollbacks <= {GOAL_FALSE_ROLLBACKS:.0%}: "
          f"{'met' if met_false else 'NOT met'}; median requests to detect <= {GOAL_MEDIAN_REQUESTS:,}: "
          f"{'met' if met_median else 'NOT met'}")
    print(f"({elapsed:.1f}s)")
    return 0 if met_false and met_median else 1


if __name__ == "__main__":
    sys.exit(main())
