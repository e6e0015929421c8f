"""`watch --all` at fleet size: one controller cycle over 2,000 models with 200 live canaries.

Builds a registry of 2,000 models (two bundles each, `git fast-import`), 200 of them with a live
canary at 5 % and 20 more with a live shadow, and a real Prometheus (Debian `prometheus`, as the
tests start it) scraping a real exporter every second: a child process serving, for every live
model, the counters `modelctl.integrations.metrics` exports (`llm_requests_total`,
`llm_errors_total`, `llm_cost_total` and a 16-bucket `llm_latency_ms_bucket` histogram) of the
control and the canary (or shadow), growing with time. An exporter, not a backfill: the counters
move between cycles (each cycle judges new data, as in production) and the samples are fresh (a
backfilled block is older than `analysis.stale_seconds`, so every sample would be refused as stale).

Then `Controller.cycle()` runs in this process with the registry's configuration (provider
prometheus, the template queries), and each cycle is measured:

- wall time, and wall time minus the time spent inside HTTP calls to Prometheus (its own query
  time and the transfer; what the goal is about);
- CPU time of this process (the exporter and Prometheus are other processes);
- peak RSS of this process (resource.getrusage);
- queries sent to Prometheus.

The first cycle is cold (every deployment file parsed, each canary's start read from history,
judges created); the rest are steady. The same is run with 50 live canaries (the query count must
not change) and, for comparison, with the batch turned off (one query per quantity per version
per model, as `watch NAME` reads).

    env -u PYTHONDONTWRITEBYTECODE python benchmarks/controller.py
    env -u PYTHONDONTWRITEBYTECODE python benchmarks/controller.py --cycles 5 --no-unbatched
    env -u PYTHONDONTWRITEBYTECODE python benchmarks/controller.py --remote

With `--remote` the registry pushes (`remote.push: true`) to a bare repository on disk, so every
cycle also fetches and saves each followed canary's judgement state on the remote: the 200-canary
run is measured with the states saved in one push per cycle (what the controller does) and, for
comparison, with one commit and one push per model (what each watcher did on its own), counting the
git processes and the pushes of each cycle.

Goals: a steady cycle at most 1 s (Prometheus' time excluded) and at most 200 MB for 200 canaries;
queries per cycle independent of the number of models.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from fastimport import FastImport, head
from scale import bundle

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

ENV = {**{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}, "GIT_AUTHOR_NAME": "Bench",
       "GIT_AUTHOR_EMAIL": "bench@example.com", "GIT_COMMITTER_NAME": "Bench",
       "GIT_COMMITTER_EMAIL": "bench@example.com", "NO_COLOR": "1", "PYTHONPATH": str(ROOT)}
ACTIVE, CANARY = "1.0.0", "1.1.0"
BUCKETS = (100, 200, 300, 400, 500, 600, 700, 800, 900, 1000, 1200, 1500, 2000, 3000, 5000)


def deployment(name: str, stage: str | None, started: str) -> bytes:
    """deployments/NAME.yaml: ACTIVE serving, CANARY in canary at 5 %, in shadow at 25 %, or registered."""
    canary = f'{{version: "{CANARY}", percent: 5, started: "{started}"}}' if stage == "canary" else "null"
    shadow = f'{{version: "{CANARY}", percent: 25, started: "{started}"}}' if stage == "shadow" else "null"
    status = f'\n  "{CANARY}": {stage}' if stage else ""
    return (f'apiVersion: modelctl/v1\nkind: Deployment\nname: {name}\nactive: "{ACTIVE}"\ncanary: {canary}\n'
            f'shadow: {shadow}\nversions:\n  "{ACTIVE}": active{status}\n').encode()


def build(path: Path, models: int, canaries: int, shadows: int, prometheus_url: str) -> list[str]:
    """A registry of `models` models, the first `canaries` with a live canary, the next `shadows` shadowed."""
    import yaml

    subprocess.run([sys.executable, "-m", "modelctl", "init", str(path)], env=ENV, check=True, capture_output=True)
    config = path / "modelctl.yaml"
    doc = yaml.safe_load(config.read_text())
    doc["metrics"]["provider"] = "prometheus"
    doc["metrics"]["url"] = prometheus_url
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    subprocess.run(["git", "commit", "-qam", "metrics from Prometheus"], cwd=path, env=ENV, check=True)
    fi = FastImport(head(path))
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 600))
    files = [("prompts/p.txt", fi.blob(b"You are a helpful assistant.\n"))]
    live = []
    for m in range(models):
        name = f"model-{m:05d}"
        stage = "canary" if m < canaries else "shadow" if m < canaries + shadows else None
        if stage:
            live.append(name)
        files += [(f"bundles/{name}/{ACTIVE}.yaml", fi.blob(bundle(name, ACTIVE, None, 0.1))),
                  (f"bundles/{name}/{CANARY}.yaml", fi.blob(bundle(name, CANARY, ACTIVE, 0.2))),
                  (f"deployments/{name}.yaml", fi.blob(deployment(name, stage, started)))]
    fi.commit("a fleet of models (benchmark)", files, int(time.time()) - 600)
    fi.run(path)
    return live


# --------------------------------------------------------------------------- the exporter


def exposition(live: list[str], elapsed: float) -> bytes:
    """The Prometheus text of every live model's control and canary at `elapsed` seconds of traffic."""
    lines = []
    for i, name in enumerate(live):
        for version, rps, rate in ((ACTIVE, 95.0, 0.01), (CANARY, 5.0, 0.01 + (i % 7) / 1000)):
            labels = f'model="{name}",version="{version}"'
            requests = int(rps * elapsed)
            lines.append(f"llm_requests_total{{{labels}}} {requests}")
            lines.append(f"llm_errors_total{{{labels}}} {int(requests * rate)}")
            lines.append(f"llm_cost_total{{{labels}}} {requests * 0.0012:.4f}")
            for bound in BUCKETS:  # latency spread evenly over 400..1400 ms
                share = min(1.0, max(0.0, (bound - 400) / 1000))
                lines.append(f'llm_latency_ms_bucket{{{labels},le="{bound}"}} {int(requests * share)}')
            lines.append(f'llm_latency_ms_bucket{{{labels},le="+Inf"}} {requests}')
    return ("\n".join(lines) + "\n").encode()


def serve_exporter(live: list[str], port_out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    """Serve /metrics on a free 127.0.0.1 port (in a child process); put the port on the queue."""
    began = time.monotonic()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            body = exposition(live, 600 + time.monotonic() - began)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port_out.put(server.server_address[1])
    server.serve_forever()


# --------------------------------------------------------------------------- measuring


class HttpMeter:
    """Counts the GETs of every metrics provider and the wall time spent inside them."""

    def __init__(self) -> None:
        from modelctl.metrics import base

        self.queries = 0
        self.seconds = 0.0
        real = base.HttpSession.get
        meter = self

        def get(session, url, params=None):  # type: ignore[no-untyped-def]
            began = time.perf_counter()
            try:
                return real(session, url, params)
            finally:
                meter.queries += 1
                meter.seconds += time.perf_counter() - began

        base.HttpSession.get = get  # type: ignore[method-assign]

    def reset(self) -> None:
        self.queries, self.seconds = 0, 0.0


class PerModel:
    """The provider with its batch hidden: every model read on its own (what `watch NAME` does)."""

    def __init__(self, provider: object) -> None:
        self._provider = provider
        self.name = getattr(provider, "name", "per-model")

    def read(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return self._provider.read(*args, **kwargs)  # type: ignore[attr-defined]


class GitMeter:
    """Counts the git processes the store starts (every one goes through `Store.git`), and the pushes."""

    def __init__(self) -> None:
        from modelctl.store import Store

        self.processes = 0
        self.pushes = 0
        self.seconds: dict[str, float] = {}  # wall time inside git, per subcommand
        real = Store.git
        meter = self

        def git(store, *args, **kwargs):  # type: ignore[no-untyped-def]
            meter.processes += 1
            meter.pushes += args[0] == "push"
            began = time.perf_counter()
            try:
                return real(store, *args, **kwargs)
            finally:
                meter.seconds[args[0]] = meter.seconds.get(args[0], 0.0) + time.perf_counter() - began

        Store.git = git  # type: ignore[method-assign]

    def reset(self) -> None:
        self.processes, self.pushes, self.seconds = 0, 0, {}


def per_model_states(ctl: object) -> None:
    """Make the controller save each model's state as a watcher alone does (one commit, one push per model)."""
    def save(report: object) -> None:
        for w in ctl.watchers.values():  # type: ignore[attr-defined]
            if not w.pending_state:
                continue
            message, text = w.pending_state
            w.pending_state = None
            w.push_state(message, text)  # what `watch NAME` does after each poll

    ctl._save_states = save  # type: ignore[attr-defined]


def run_cycles(path: Path, cycles: int, meter: HttpMeter, batched: bool = True, remote: str | None = None,
               gits: GitMeter | None = None) -> list[dict[str, float]]:
    """Run `cycles` controller cycles; one row of figures per cycle (`remote`: "batch" or "per-model" state saves)."""
    from modelctl import watch
    from modelctl.controller import Controller
    from modelctl.metrics import make_provider
    from modelctl.ops import WriteOptions
    from modelctl.registry import Registry

    reg = Registry(path)
    provider = make_provider(reg.config().as_dict())
    ctl = Controller(reg, watch.WatchOptions(interval=30),
                     provider=provider if batched else PerModel(provider),  # type: ignore[arg-type]
                     write_options=WriteOptions(push=True) if remote else None)
    if remote == "per-model":
        per_model_states(ctl)
    rows = []
    for number in range(cycles):
        if number:
            time.sleep(1.1)  # a scrape in between: every cycle judges new counters (not timed)
        meter.reset()
        if gits is not None:
            gits.reset()
        wall0, cpu0 = time.perf_counter(), time.process_time()
        report = ctl.cycle()
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        assert not report.errors, report.errors
        assert not getattr(report, "state_error", None), report.state_error
        rows.append({"wall": wall, "http": meter.seconds, "own": wall - meter.seconds, "cpu": cpu,
                     "queries": meter.queries, "followed": len(report.followed),
                     "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                     "gits": gits.processes if gits else 0, "pushes": gits.pushes if gits else 0,
                     "git_s": sum(gits.seconds.values()) if gits else 0.0})
        if gits is not None:
            print(f"  cycle {number + 1}: {wall:.3f} s wall; inside git: "
                  + ", ".join(f"{cmd} {sec:.3f} s" for cmd, sec in sorted(gits.seconds.items(), key=lambda i: -i[1])),
                  file=sys.stderr, flush=True)
    return rows


def wait_for_series(url: str, expected: int, timeout: float = 60) -> None:
    """Until Prometheus holds the requests series of every live model's two versions."""
    import httpx

    deadline = time.monotonic() + timeout
    count = 0
    while time.monotonic() < deadline:
        try:
            doc = httpx.get(f"{url}/api/v1/query", params={"query": "count(llm_requests_total)"}, timeout=5).json()
            result = doc["data"]["result"]
            count = int(float(result[0]["value"][1])) if result else 0
        except (httpx.HTTPError, ValueError, KeyError, IndexError):
            count = 0
        if count >= expected:
            return
        time.sleep(0.2)  # waiting for a real server's first scrapes, not timing anything
    raise RuntimeError(f"Prometheus holds {count} of {expected} series after {timeout:g}s")


def bare_remote(path: Path, where: Path) -> None:
    """A bare copy of the registry at `where`, its `origin`, pushed to (remote.push: true)."""
    subprocess.run(["git", "clone", "-q", "--bare", str(path), str(where)], env=ENV, check=True)
    for args in (["remote", "add", "origin", str(where)], ["fetch", "-q", "origin"],
                 ["branch", "-q", "--set-upstream-to=origin/main", "main"]):
        subprocess.run(["git", *args], cwd=path, env=ENV, check=True)


def scenario(tmp: Path, label: str, models: int, canaries: int, shadows: int, cycles: int, meter: HttpMeter,
             batched: bool = True, remote: str | None = None, gits: GitMeter | None = None) -> dict[str, object]:
    from metrics_servers import ensure_prometheus, prometheus_server

    binary = ensure_prometheus()
    if binary is None:
        raise SystemExit("prometheus is not installed and cannot be installed here")
    queue: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    # the live list is known before the registry exists: the first canaries, then the shadows
    live = [f"model-{m:05d}" for m in range(canaries + shadows)]
    exporter = multiprocessing.Process(target=serve_exporter, args=(live, queue), daemon=True)
    exporter.start()
    try:
        port = queue.get(timeout=30)
        with prometheus_server([f"127.0.0.1:{port}"], tmp / f"prom-{label}", binary=binary) as prom:
            path = tmp / f"reg-{label}"
            built = build(path, models, canaries, shadows, prom.url)
            assert built == live
            if remote:
                bare_remote(path, tmp / f"origin-{label}.git")
            wait_for_series(prom.url, 2 * len(live))
            rows = run_cycles(path, cycles, meter, batched, remote, gits)
    finally:
        exporter.terminate()
        exporter.join(10)
    steady = rows[1:] or rows
    return {"label": label, "models": models, "canaries": canaries, "shadows": shadows, "first": rows[0],
            "own": statistics.median(r["own"] for r in steady), "wall": statistics.median(r["wall"] for r in steady),
            "cpu": statistics.median(r["cpu"] for r in steady), "queries": steady[-1]["queries"],
            "rss_mb": max(r["rss_mb"] for r in rows), "followed": steady[-1]["followed"],
            "gits": statistics.median(r["gits"] for r in steady), "pushes": statistics.median(r["pushes"] for r in steady),
            "git_s": statistics.median(r["git_s"] for r in steady)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=2000)
    parser.add_argument("--cycles", type=int, default=6, help="cycles per scenario (the first is cold)")
    parser.add_argument("--no-unbatched", action="store_true", help="skip the per-model comparison")
    parser.add_argument("--remote", action="store_true",
                        help="push to a bare repository on disk: judgement states saved in one push per cycle, "
                             "and one push per model for comparison")
    args = parser.parse_args()
    meter = HttpMeter()
    if args.remote:
        remote_main(args, meter)
        return
    results = []
    with tempfile.TemporaryDirectory(prefix="modelctl-controller-bench-") as tmp:
        plan = [("200 canaries + 20 shadows", 200, 20, True), ("50 canaries", 50, 0, True)]
        if not args.no_unbatched:
            plan.append(("200 + 20, per-model reads", 200, 20, False))
        for label, canaries, shadows, batched in plan:
            print(f"running: {args.models} models, {label} ...", file=sys.stderr, flush=True)
            results.append(scenario(Path(tmp), label.split(",")[0].replace(" ", "-").replace("+", "")
                                    + ("" if batched else "-per-model"), args.models, canaries, shadows,
                                    args.cycles, meter, batched) | {"label": label})
    print(f"\nwatch --all, {args.models} models; steady cycles: median of {args.cycles - 1}; "
          "'own' = wall minus the time inside HTTP calls to Prometheus\n")
    head_row = ("scenario", "followed", "queries/cycle", "cycle own s", "cycle wall s", "CPU s",
                "first cycle own s", "peak RSS MB")
    print("| " + " | ".join(head_row) + " |")
    print("|" + "---|" * len(head_row))
    for r in results:
        first = r["first"]
        assert isinstance(first, dict)
        print(f"| {r['label']} | {r['followed']} | {r['queries']} | {r['own']:.3f} | {r['wall']:.3f} | "
              f"{r['cpu']:.3f} | {first['own']:.3f} | {r['rss_mb']:.0f} |")
    main_row = results[0]
    print("\nratio to the goals (200 canaries): "
          f"cycle {float(main_row['own']):.3f} s / 1 s = {float(main_row['own']) / 1.0:.2f}; "  # type: ignore[arg-type]
          f"memory {float(main_row['rss_mb']):.0f} MB / 200 MB = {float(main_row['rss_mb']) / 200:.2f}; "  # type: ignore[arg-type]
          f"queries {main_row['queries']} with 200 canaries, {results[1]['queries']} with 50")


def remote_main(args: argparse.Namespace, meter: HttpMeter) -> None:
    """The 200-canary run pushing to a bare remote on disk, states in one push per cycle or one per model."""
    gits = GitMeter()
    results = []
    with tempfile.TemporaryDirectory(prefix="modelctl-controller-bench-") as tmp:
        for label, saves in (("one push per cycle", "batch"), ("one push per model", "per-model")):
            print(f"running: {args.models} models, 200 canaries + 20 shadows, remote, {label} ...", file=sys.stderr,
                  flush=True)
            results.append(scenario(Path(tmp), f"remote-{saves}", args.models, 200, 20, args.cycles, meter,
                                    remote=saves, gits=gits) | {"label": label})
    print(f"\nwatch --all, {args.models} models, 200 canaries + 20 shadows, pushing to a bare remote on disk; "
          f"steady cycles: median of {args.cycles - 1}; 'own' = wall minus the time inside HTTP calls to "
          "Prometheus\n")
    head_row = ("judgement states saved", "followed", "git processes/cycle", "pushes/cycle", "cycle own s",
                "of which in git s", "cycle wall s", "CPU s", "first cycle own s")
    print("| " + " | ".join(head_row) + " |")
    print("|" + "---|" * len(head_row))
    for r in results:
        first = r["first"]
        assert isinstance(first, dict)
        print(f"| {r['label']} | {r['followed']} | {r['gits']:.0f} | {r['pushes']:.0f} | {r['own']:.3f} | "
              f"{r['git_s']:.3f} | {r['wall']:.3f} | {r['cpu']:.3f} | {first['own']:.3f} |")


if __name__ == "__main__":
    main()
