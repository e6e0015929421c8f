"""How long a rollback takes on a registry with many models (the issue asks: well under a second).

Builds registries of N models with `git fast-import` (one process): each model has 1.0.0 active
and 1.0.1 in canary at 5 %, its bundles, its deployment file and the annotated tags a real
lifecycle leaves (2 registrations, 8 stage tags), refs packed. Then, rolling back a different
model's canary each time:

- library: `ops.rollback` in one process (as `watch` calls it): plan, commit, tag, local refs,
  work tree;
- CLI: `modelctl rollback NAME --reason ...` as a fresh process (adds interpreter start-up,
  shown next to bare `python -c pass`);
- pushed: `ops.rollback` with --push to a bare repository over file:// (fetch, plan on the
  remote tip, atomic push of branch and tag).

    python benchmarks/rollback.py                    # 10, 1,000 and 5,000 models
    python benchmarks/rollback.py --models 200 2000 --runs 30
"""
from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fastimport import FastImport, head

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROMPT = b"You are a helpful assistant.\n"
IDENTITY = {"GIT_AUTHOR_NAME": "Bench", "GIT_AUTHOR_EMAIL": "bench@example.com",
            "GIT_COMMITTER_NAME": "Bench", "GIT_COMMITTER_EMAIL": "bench@example.com"}
STAGE_TAGS = ["staging#1", "staging!#2", "active#3", "staging#4", "staging!#5", "shadow#6", "shadow!#7", "canary#8"]


def _bundle(name: str, version: str, parent: str | None) -> bytes:
    sha = hashlib.sha256(PROMPT).hexdigest()
    parent_line = f'parent: "{parent}"\n' if parent else ""
    return (f'apiVersion: modelctl/v1\nkind: Bundle\nname: {name}\nversion: "{version}"\n{parent_line}'
            f"model:\n  provider: openai\n  id: gpt-4.1-mini-2025-04-14\nprompt:\n  template: prompts/p.txt\n"
            f'  sha256: "{sha}"\nconfig:\n  temperature: {0.3 if parent else 0.2}\nbaseline:\n'
            f"  error_rate: 0.01\n  latency_p95_ms: 890\n  cost_per_request: 0.0012\n  requests: 12500\n").encode()


def _deployment(name: str) -> bytes:
    return (f'apiVersion: modelctl/v1\nkind: Deployment\nname: {name}\nactive: "1.0.0"\nprevious: null\n'
            'canary: {version: "1.0.1", percent: 5}\nshadow: null\nversions:\n  "1.0.0": active\n'
            '  "1.0.1": canary\nhold: null\n').encode()


def build(path: Path, models: int) -> int:
    """A registry of `models` models, each with a live canary and its tag history; returns the tag count."""
    from modelctl import ops

    ops.init(path)
    fi = FastImport(head(path))
    when = 1_700_000_000
    prompt = fi.blob(PROMPT)
    tags = 0
    for m in range(models):
        name = f"model-{m:05d}"
        files = [(f"bundles/{name}/1.0.0.yaml", fi.blob(_bundle(name, "1.0.0", None))),
                 (f"bundles/{name}/1.0.1.yaml", fi.blob(_bundle(name, "1.0.1", "1.0.0"))),
                 (f"deployments/{name}.yaml", fi.blob(_deployment(name)))]
        if m == 0:
            files.append(("prompts/p.txt", prompt))
        commit = fi.commit(f"modelctl: register {name} 1.0.0 and 1.0.1 (benchmark)", files, when + m)
        names = [f"{name}@v1.0.0", f"{name}@v1.0.1"] + [f"{name}#{t}" for t in STAGE_TAGS]
        for i, tag in enumerate(names):
            fi.tag(tag, commit, f"{tag} (benchmark)", when + m * 20 + i)
            tags += 1
    fi.run(path)
    return tags


def _pcts(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return statistics.median(ordered), p95


def measure(path: Path, models: int, runs: int, tmp: Path) -> dict:
    """p50/p95 seconds of a rollback: library, CLI process, pushed to a file:// remote."""
    from modelctl import ops
    from modelctl.registry import Registry

    reg = Registry(path)
    victims = iter(f"model-{m:05d}" for m in range(models))
    lib = []
    for _ in range(min(runs, models // 3 or 1)):
        name = next(victims)
        started = time.perf_counter()
        out = ops.rollback(reg, name, reason="benchmark", expect_canary="1.0.1")
        lib.append(time.perf_counter() - started)
        assert not out.noop and out.tags, out
    cli = []
    env = {**os.environ, **IDENTITY, "NO_COLOR": "1", "PYTHONPATH": str(ROOT)}
    for _ in range(min(5, models // 3 or 1)):
        name = next(victims, None)
        if name is None:
            break
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "modelctl", "rollback", name, "--reason", "benchmark"], cwd=path,
                       env=env, check=True, capture_output=True)
        cli.append(time.perf_counter() - started)
    bare = tmp / f"remote-{models}.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(path), str(bare)], check=True)
    subprocess.run(["git", "remote", "add", "origin", f"file://{bare}"], cwd=path, check=True)
    pushed = []
    for _ in range(min(runs, models // 3 or 1)):
        name = next(victims, None)
        if name is None:
            break
        started = time.perf_counter()
        out = ops.rollback(reg, name, reason="benchmark", opts=ops.WriteOptions(push=True))
        pushed.append(time.perf_counter() - started)
        assert out.pushed, out
    return {"lib": _pcts(lib), "cli": _pcts(cli) if cli else None, "pushed": _pcts(pushed) if pushed else None,
            "n": (len(lib), len(cli), len(pushed))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, nargs="+", default=[10, 1000, 5000], help="registry sizes")
    parser.add_argument("--runs", type=int, default=20, help="rollbacks timed per size and mode")
    args = parser.parse_args()
    os.environ.update(IDENTITY)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    python_start = time.perf_counter() - started
    rows = []
    with tempfile.TemporaryDirectory(prefix="modelctl-rollback-bench-") as tmp:
        for models in args.models:
            path = Path(tmp) / f"reg-{models}"
            t0 = time.perf_counter()
            tags = build(path, models)
            built = time.perf_counter() - t0
            print(f"built {models} models, {tags} tags in {built:.1f}s", file=sys.stderr)
            rows.append((models, tags, measure(path, models, args.runs, Path(tmp))))

    def cell(pair):
        return "-" if pair is None else f"{pair[0] * 1000:.0f} / {pair[1] * 1000:.0f}"

    print(f"rollback of a live canary, milliseconds p50 / p95 (python start-up alone: {python_start * 1000:.0f} ms)")
    header = ["models", "tags", "library", "CLI process", "pushed (file://)", "runs"]
    table = [header] + [[f"{m:,}", f"{t:,}", cell(r["lib"]), cell(r["cli"]), cell(r["pushed"]),
                         "/".join(map(str, r["n"]))] for m, t, r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths)))


if __name__ == "__main__":
    main()
