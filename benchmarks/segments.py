"""A canary limited to a segment, over many keys: its share within the segment, and outside it.

For each configured percent, N distinct keys (``key-0`` ... ``key-N-1``) are routed by the serving
client (``Snapshot.pick`` from a compiled routing document) twice: with attributes in the segment
(``tier=internal``) and with attributes outside it (``tier=external``, no attributes, another
attribute only). The goal (issue 15): the canary's share in the segment is within 0.5 % (absolute)
of the configured percent, and no key outside the segment ever gets the canary. The rule itself
is deterministic, so the figures are the same on every run; the time per pick is shown for scale.

    python benchmarks/segments.py                 # 100,000 keys, percents 1 5 10 25 50 100
    python benchmarks/segments.py --keys 1000000
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from modelctl import serving  # noqa: E402 (after the path set-up)

NAME = "support-agent"
RULE = {"name": "internal", "attribute": "tier", "equals": "internal"}


def document(percent: float) -> dict:
    """A routing document: active 2.4.0, canary 2.5.0 at `percent` of segment internal."""
    def entry(version: str, pct: float) -> dict:
        return {"version": version, "percent": pct, "model": {"provider": "openai", "id": "gpt-4.1-mini-2025-04-14"},
                "prompt": {"template": "prompts/p.txt"}, "config": {}}

    canary = entry("2.5.0", percent)
    canary["segment"] = dict(RULE)
    return {"schema": "modelctl/v1", "name": NAME, "active": entry("2.4.0", 100 - percent), "canary": canary,
            "shadow": None}


def measure(percent: float, keys: int) -> tuple[float, int, float]:
    """(canary share in the segment, canary picks outside it, microseconds per pick)."""
    snap = serving.Snapshot({NAME: serving.compile_document(document(percent))})
    inside = {"tier": "internal"}
    outside = ({"tier": "external"}, {}, {"region": "eu-west-1"})
    start = time.perf_counter()
    hits = sum(snap.pick(NAME, f"key-{i}", attributes=inside).role == "canary" for i in range(keys))
    elapsed = time.perf_counter() - start
    leaks = sum(snap.pick(NAME, f"key-{i}", attributes=outside[i % 3]).role == "canary" for i in range(keys))
    leaks += sum(snap.pick(NAME, f"key-{i}").role == "canary" for i in range(keys))
    return hits / keys, leaks, elapsed / keys * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--percents", type=float, nargs="+", default=[1, 5, 10, 25, 50, 100])
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores; {args.keys} keys per row")
    print("| percent of segment | canary share in segment | difference | goal | canary picks outside | pick |")
    print("| --- | --- | --- | --- | --- | --- |")
    worst = 0.0
    for pct in args.percents:
        share, leaks, micros = measure(pct, args.keys)
        diff = share * 100 - pct
        worst = max(worst, abs(diff))
        print(f"| {pct:g} % | {share * 100:.3f} % | {diff:+.3f} % | within 0.5 % | {leaks} of {args.keys * 2} | "
              f"{micros:.1f} µs |")
    return 0 if worst <= 0.5 else 1


if __name__ == "__main__":
    sys.exit(main())
