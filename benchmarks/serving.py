"""How fast the serving client answers (goal: `pick` at most 50 µs) and reloads (goal: at most 10 ms).

Lays out a mounted ConfigMap as the kubelet does (each file a symlink into `..data/`, `..data` a
symlink to a timestamped directory) holding N routing documents, each with an active version, a
canary at 10 %, a shadow at 25 % and a prompt of about 2 KB inline. Then, in one process:

- pick: `Router.pick(model, key)` over many distinct keys and models, each call timed alone;
- pick + attributes: the same plus the span attributes a gateway puts on its trace;
- maybe_reload (unchanged): the per-request "has the ConfigMap changed" check;
- reload: `Router.reload()` of the whole directory, every document changed (read, parse,
  validate, swap), and with none changed (read and compare; the usual ConfigMap update changes one).

    python benchmarks/serving.py                    # 50 and 500 models
    python benchmarks/serving.py --models 50 --picks 200000 --reloads 300
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from modelctl import serving  # noqa: E402 (after the path set-up)

PROMPT = ("You are a careful support assistant. Answer from the knowledge base only. " * 28)[:2000]
RULE = {"hash": "sha256", "input": "utf8(name + '\\0' + key)", "bucket": "uint64_be(digest[0:8]) % 10000",
        "buckets": 10000, "canary_when": "bucket < round(canary.percent * 100)"}


def _entry(version: str, percent: float, model_id: str) -> dict:
    return {"version": version, "percent": percent, "model": {"provider": "openai", "id": model_id},
            "prompt": {"template": "prompts/support/v3.txt", "sha256": "9f" * 32, "text": PROMPT},
            "config": {"temperature": 0.3, "top_p": 0.95, "max_tokens": 1024},
            "fallbacks": [{"provider": "anthropic", "id": "claude-sonnet-4-5-20250929"}]}


def document(name: str, commit: str) -> dict:
    """A routing document with active, canary (10 %) and shadow (25 %)."""
    return {"schema": "modelctl/v1", "name": name,
            "active": _entry("2.3.1", 90, "gpt-4.1-mini-2025-04-14"),
            "canary": _entry("2.4.0", 10, "gpt-4.1-2025-04-14"),
            "shadow": _entry("2.5.0", 25, "gpt-4.1-2025-04-14"),
            "assignment": RULE, "commit": commit}


def configmap(root: Path, models: int) -> list[str]:
    """The kubelet's layout of a ConfigMap with one document per model, in two generations whose every
    document differs (..data points to the first); returns the model names."""
    names = [f"model-{i:04d}" for i in range(models)]
    for gen, commit in enumerate(("5db968f04cb89146b6ebdb049b30d657aced0581", "0e3c7f" + "0" * 34)):
        data = root / f"..2026_12_01_00_00_00.00000{gen}"
        data.mkdir(parents=True)
        for name in names:
            (data / f"{name}.json").write_text(json.dumps(document(name, commit)))
    for name in names:
        os.symlink(f"..data/{name}.json", root / f"{name}.json")
    os.symlink("..2026_12_01_00_00_00.000000", root / "..data")
    return names


def swap(root: Path, gen: int) -> None:
    """Point ..data at a generation, atomically (as the kubelet does)."""
    os.symlink(f"..2026_12_01_00_00_00.00000{gen}", root / "..data_tmp")
    os.replace(root / "..data_tmp", root / "..data")


def timed(fn, runs: int, clock=time.perf_counter) -> list[float]:
    """Each call's duration in seconds (wall clock, or the thread's CPU time with clock=time.thread_time)."""
    out = []
    for i in range(runs):
        start = clock()
        fn(i)
        out.append(clock() - start)
    return out


def pct(samples: list[float], q: float) -> float:
    """The q-quantile (0..1) of the samples."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(models: int, picks: int, reloads: int) -> list[tuple]:
    """(operation, p50, p99, unit, goal) rows for one directory size."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "routing"
        root.mkdir()
        names = configmap(root, models)
        router = serving.Router.from_directory(root)
        keys = [f"user-{i}" for i in range(4096)]
        work = [(names[i % len(names)], keys[i % len(keys)]) for i in range(picks)]
        pick = router.pick

        def one(i):
            pick(*work[i])

        def with_attrs(i):
            pick(*work[i]).attributes()

        for _ in range(2):  # warm up caches and the allocator
            timed(one, min(picks, 20_000))
        pick_s = timed(one, picks)
        attr_s = timed(with_attrs, picks)
        check_s = timed(lambda i: router.maybe_reload(), min(picks, 20_000))
        router.reload()
        same_s = timed(lambda i: router.reload(), reloads)
        same_cpu = timed(lambda i: router.reload(), reloads, time.thread_time)
        changed_s, changed_cpu, gen = [], [], 0
        for _ in range(reloads):
            for out, clock in ((changed_s, time.perf_counter), (changed_cpu, time.thread_time)):
                gen ^= 1
                swap(root, gen)  # not timed: every document differs from the loaded ones
                out += timed(lambda _: router.reload(), 1, clock)
    us, ms = 1e6, 1e3
    return [
        ("pick", pct(pick_s, .5) * us, pct(pick_s, .99) * us, None, "µs", 50),
        ("pick + attributes()", pct(attr_s, .5) * us, pct(attr_s, .99) * us, None, "µs", 50),
        ("maybe_reload (unchanged)", pct(check_s, .5) * us, pct(check_s, .99) * us, None, "µs", None),
        (f"reload, all {models} changed", pct(changed_s, .5) * ms, pct(changed_s, .99) * ms,
         pct(changed_cpu, .5) * ms, "ms", 10),
        ("reload, none changed", pct(same_s, .5) * ms, pct(same_s, .99) * ms, pct(same_cpu, .5) * ms, "ms", 10),
    ]


def main() -> None:
    """Print one table per directory size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, nargs="+", default=[50, 500])
    parser.add_argument("--picks", type=int, default=100_000)
    parser.add_argument("--reloads", type=int, default=200)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores; {args.picks} picks, {args.reloads} reloads")
    # CPU time of the reloading thread next to the wall clock: on a busy machine the difference is
    # time spent waiting for a core, not work the reload does
    print("| models | operation | p50 | p99 | CPU p50 | goal | ratio (p50 / goal) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for models in args.models:
        for op, p50, p99, cpu, unit, goal in run(models, args.picks, args.reloads):
            ratio = f"{p50 / goal:.2f}" if goal else "-"
            print(f"| {models} | {op} | {p50:.1f} {unit} | {p99:.1f} {unit} | "
                  f"{f'{cpu:.1f} {unit}' if cpu is not None else '-'} | {f'{goal} {unit}' if goal else '-'} | {ratio} |")
    # the reload figure for 500 models is for scale only: the 10 ms goal is stated for about 50


if __name__ == "__main__":
    main()
