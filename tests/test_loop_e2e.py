"""The loop closed end to end, with real parts only.

A registry with a live canary -> its rendered ConfigMap mounted as the kubelet lays it out -> the
serving client and a real ``litellm.Router`` (mock completions; the canary's deployment fails)
serving a stream of requests -> the integration's metrics -> a real Prometheus scraping them ->
``modelctl watch`` (a real process) rolls back -> the rollback commit carries the new ConfigMap ->
the mount is swapped -> the serving client reloads -> the canary's keys are served by the active
version again. Each hop's time is printed (``pytest -s``).
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import threading
import time

import pytest
from conftest import ROOT, git, new_registry, register_chain
from metrics_servers import ensure_prometheus, prometheus_server
from test_render_manifests import configmap, kubelet_mount

# LiteLLM fetches its price list from the network at import unless told not to
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")
litellm = pytest.importorskip("litellm")

import modelctl  # noqa: E402
from modelctl import routing  # noqa: E402
from modelctl.integrations import litellm as integration  # noqa: E402
from modelctl.integrations.metrics import ServingMetrics  # noqa: E402
from modelctl.serving import Router  # noqa: E402

pytestmark = pytest.mark.e2e

NAME, ACTIVE, CANARY = "support-agent", "1.0.0", "1.0.1"
CM = f"rendered/modelctl-{NAME}.yaml"
ACTIVE_ID, CANARY_ID = integration.deployment_id(NAME, ACTIVE), integration.deployment_id(NAME, CANARY)
MESSAGES = [{"role": "user", "content": "Where is my order?"}]


class Traffic:
    """Simulated requests with distinct keys through the gateway, from an event loop in a thread of its own.

    LiteLLM binds its background workers to the first loop it runs in, so every request of the
    test (the stream and the checks after the rollback) runs on this one loop.
    """

    def __init__(self, gateway: integration.Gateway, *, limit: int, seconds: float, batch: int = 10,
                 pace: float = 0.05):
        self.gateway, self.limit, self.seconds, self.batch, self.pace = gateway, limit, seconds, batch, pace
        self.served: dict[str, tuple[str, str | None, str | None]] = {}  # key -> (role picked, deployment, error)
        self.first_error: float | None = None  # wall clock, to compare with the rollback commit's time
        self.stopping = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="traffic", daemon=True)
        self.stream: asyncio.Future | None = None

    def start(self) -> Traffic:
        self.thread.start()
        self.stream = asyncio.run_coroutine_threadsafe(self._stream(), self.loop)
        return self

    async def _stream(self) -> int:
        deadline, sent = time.monotonic() + self.seconds, 0
        while sent < self.limit and not self.stopping.is_set() and time.monotonic() < deadline:
            await asyncio.gather(*(self._one(f"user-{sent + i}") for i in range(self.batch)))
            sent += self.batch
            await asyncio.sleep(self.pace)  # a steady stream: the metrics endpoint shares the core with it
        return sent

    async def _one(self, key: str) -> None:
        role = self.gateway.serving.pick(NAME, key).role  # the documents do not change while the stream runs
        try:
            reply = await self.gateway.acompletion(NAME, MESSAGES, key=key)
        except Exception as exc:
            self.served[key] = (role, None, str(exc))
            if self.first_error is None:
                self.first_error = time.time()
            return
        self.served[key] = (role, reply._hidden_params["model_id"], None)

    def stop(self) -> int:
        """End the stream; the number of requests it sent."""
        self.stopping.set()
        assert self.stream is not None
        return self.stream.result(timeout=30)

    def run(self, coro, timeout: float = 60):
        """Run a coroutine on the traffic loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.stopping.set()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        if not self.thread.is_alive():
            self.loop.close()


def wait_for(fact, timeout: float, step: float = 0.1):
    """Poll `fact()` until it is truthy or `timeout` seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = fact()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


def test_a_failing_canary_is_rolled_back_through_prometheus_and_its_keys_return_to_the_active_version(tmp_path):
    binary = ensure_prometheus()
    if binary is None:
        pytest.skip("prometheus is not installed and cannot be installed here")
    hops: list[tuple[str, float]] = []

    def hop(label: str, since: float) -> float:
        now = time.monotonic()
        hops.append((label, now - since))
        print(f"hop {label}: {now - since:.2f}s")
        return now

    # a registry from the template (render on): 1.0.0 active, 1.0.1 in canary at 25 %
    start = time.monotonic()
    reg = modelctl.Registry(new_registry(tmp_path / "reg"))
    drafts = tmp_path / "drafts"
    drafts.mkdir()
    register_chain(reg, drafts, count=2)
    reg.promote(NAME, ACTIVE, "staging")
    reg.promote(NAME, ACTIVE, "active")
    reg.promote(NAME, CANARY, "staging")
    reg.shadow(NAME, CANARY, 25)
    reg.canary(NAME, CANARY, 25)
    root = reg.root
    canary_commit = git(root, "rev-parse", "HEAD").strip()
    assert CM in git(root, "show", "--name-only", "--format=", "HEAD").split()  # the canary's commit renders it
    obj, doc = configmap(git(root, "show", f"HEAD:{CM}"))
    assert (doc["active"]["version"], doc["canary"]["version"], doc["canary"]["percent"]) == (ACTIVE, CANARY, 25)
    t = hop("registry writes -> rendered/ in the canary's commit", start)

    # the ConfigMap's data mounted as the kubelet does, read by the serving client
    mount = tmp_path / "mount"
    kubelet_mount(mount, obj["data"], "2026_12_01_06_00_00.1")
    router = Router.from_directory(mount)
    assert router.snapshot.bundles(NAME)["canary"].version == CANARY
    # the LiteLLM router from the mounted document; the canary's deployment fails, the active one answers
    config = integration.router_config([json.loads((mount / f"{NAME}.json").read_text())])
    for deployment in config["model_list"]:
        ident = deployment["model_info"]["id"]
        deployment["litellm_params"].update(api_key="unused", mock_response=(
            Exception(f"{ident} is unavailable") if ident == CANARY_ID else f"served by {ident}"))
    assert {d["model_info"]["id"] for d in config["model_list"]} == {ACTIVE_ID, CANARY_ID}
    metrics = ServingMetrics()
    gateway = integration.Gateway(litellm.Router(model_list=config["model_list"], num_retries=0,
                                                 **config["router_settings"]), router, metrics=metrics)
    t = hop("rendered/ -> mounted ConfigMap -> serving client and LiteLLM gateway", t)

    traffic = Traffic(gateway, limit=30_000, seconds=85)
    watch = None
    try:
        with metrics.serve() as exporter, prometheus_server([f"127.0.0.1:{exporter.port}"], tmp_path / "prom",
                                                            binary=binary) as prom:
            t = hop("metrics endpoint up -> Prometheus scraping it", t)
            traffic.start()
            watch = subprocess.Popen(
                [sys.executable, "-m", "modelctl", "watch", NAME, "--provider", "prometheus", "--url", prom.url,
                 "--interval", "1s", "--max-duration", "90s", "--json"],
                cwd=root, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True)
            assert wait_for(lambda: traffic.first_error, 30), "the canary served no request"
            first_error = time.monotonic() - (time.time() - traffic.first_error)
            hop("traffic started -> first request the canary failed", t)

            def scraped_errors() -> float:
                result = prom.query(f'sum(llm_errors_total{{model="{NAME}",version="{CANARY}"}})')["data"]["result"]
                return float(result[0]["value"][1]) if result else 0.0

            assert wait_for(scraped_errors, 30, step=0.2) > 0, "Prometheus never saw the canary's errors"
            t = hop("first error -> counted in Prometheus", first_error)
            out, err = watch.communicate(timeout=100)
            t = hop("in Prometheus -> watch rolled back (process exited)", t)
            sent = traffic.stop()
    except BaseException:
        traffic.close()
        raise
    finally:
        if watch is not None and watch.poll() is None:
            watch.kill()
            watch.wait()

    try:
        # watch rolled the canary back, on the evidence of the integration's metrics
        assert watch.returncode == 1, err
        result = [json.loads(line) for line in out.splitlines() if line.strip()][-1]
        assert result["event"] == "result" and result["outcome"] == "rolled-back", result
        assert "Traceback" not in err
        assert git(root, "log", "-1", "--format=%s").startswith(f"modelctl: rollback {NAME} {CANARY}")
        committed = int(git(root, "log", "-1", "--format=%ct"))
        assert committed - int(traffic.first_error) <= 60, f"rolled back {committed - traffic.first_error:.0f}s after " \
                                                           "the first error"
        # the rollback commit carries the updated ConfigMap: nothing in canary any more
        assert {CM, f"deployments/{NAME}.yaml"} <= set(git(root, "show", "--name-only", "--format=", "HEAD").split())
        obj, doc = configmap(git(root, "show", f"HEAD:{CM}"))
        assert doc["canary"] is None and doc["active"]["version"] == ACTIVE and doc["active"]["percent"] == 100

        # what the stream saw before: the canary's keys failed, the active version answered the rest
        canary_keys = sorted(k for k, (role, _, _) in traffic.served.items() if role == "canary")
        active_keys = [k for k, (role, _, _) in traffic.served.items() if role == "active"]
        assert len(traffic.served) == sent and len(canary_keys) >= 20, (sent, len(canary_keys))
        assert all(CANARY_ID in traffic.served[k][2] for k in canary_keys)
        assert all(traffic.served[k][1:] == (ACTIVE_ID, None) for k in active_keys)
        # ... exactly the keys `resolve --key` assigned to the canary at the canary's commit
        before = reg.deployment(NAME, reg.snapshot(canary_commit))
        assert canary_keys == sorted(k for k in traffic.served if routing.assign(before, k) == CANARY)

        # the kubelet swaps the mounted ConfigMap to the new data; the serving client reloads
        t = time.monotonic()
        old = os.readlink(mount / "..data")
        kubelet_mount(mount, obj["data"], "2026_12_01_06_01_00.2")
        shutil.rmtree(mount / old)  # as the kubelet removes the previous generation
        assert router.maybe_reload() is True
        assert router.snapshot.bundles(NAME)["canary"] is None
        t = hop("rollback commit -> ConfigMap swapped and reloaded", t)

        # every key the canary served is now the active version's, as `resolve --key` says too
        deployment = modelctl.Registry(root).deployment(NAME)
        for key in canary_keys:
            pick = router.pick(NAME, key)
            assert (pick.version, pick.role) == (ACTIVE, "active")
            assert routing.assign(deployment, key) == ACTIVE

        async def again(keys):
            return await asyncio.gather(*(gateway.acompletion(NAME, MESSAGES, key=k) for k in keys))

        replies = traffic.run(again(canary_keys))
        assert [r._hidden_params["model_id"] for r in replies] == [ACTIVE_ID] * len(canary_keys)
        assert {r.choices[0].message.content for r in replies} == {f"served by {ACTIVE_ID}"}
        hop(f"reload -> the canary's {len(canary_keys)} keys answered by {ACTIVE}", t)
    finally:
        traffic.close()
    print(f"requests sent: {sent}, to the canary: {len(canary_keys)}; "
          f"first error -> rollback commit: {committed - traffic.first_error:.1f}s")
    assert time.monotonic() - start < 120
