"""modelctl.integrations.litellm: a real litellm.Router (mock completions, no network) routes as `resolve --key` says.

Also the serving metrics: scraped by a real Prometheus and read back by watch's Prometheus provider
with the registry template's default queries.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import struct
import subprocess
import sys
import time

import pytest
from conftest import ROOT, git, run_cli
from lifecyclekit import live_registry
from metrics_servers import ensure_prometheus, prometheus_server

# LiteLLM fetches its price list from the network at import unless told not to
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")
litellm = pytest.importorskip("litellm")
from litellm.integrations.custom_logger import CustomLogger  # noqa: E402

import modelctl  # noqa: E402
from modelctl import serving, yamlio  # noqa: E402
from modelctl.integrations import litellm as integration  # noqa: E402
from modelctl.integrations.metrics import ServingMetrics  # noqa: E402
from modelctl.metrics.prometheus import PrometheusProvider  # noqa: E402

NAME = "support-agent"


class Observer(CustomLogger):
    """What each deployment received, through LiteLLM's own callback API."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[dict] = []

    def _record(self, kwargs: dict, ok: bool) -> None:
        params = kwargs.get("litellm_params") or {}
        self.calls.append({"ok": ok, "id": (params.get("model_info") or {}).get("id"),
                           "messages": kwargs.get("messages"), "params": kwargs.get("optional_params") or {},
                           "metadata": params.get("metadata") or {}})

    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):
        self._record(kwargs, True)

    async def async_log_failure_event(self, kwargs, response_obj, start_time, end_time):
        self._record(kwargs, False)


@pytest.fixture(scope="module")
def run():
    """One event loop for the module: LiteLLM binds its background logging worker to the first loop it runs in."""
    loop = asyncio.new_event_loop()
    yield loop.run_until_complete
    loop.close()


@pytest.fixture(scope="module")
def module_observer():
    # registered once: LiteLLM copies litellm.callbacks into its own lists on first use
    seen = Observer()
    before = list(litellm.callbacks)
    litellm.callbacks = [*before, seen]
    yield seen
    litellm.callbacks = before


@pytest.fixture
def observer(module_observer):
    module_observer.calls.clear()
    return module_observer


def mocked(config: dict, failing: tuple[str, ...] = ()) -> dict:
    """The config with every deployment answering its own id (or raising, when its id is in `failing`)."""
    for d in config["model_list"]:
        ident = d["model_info"]["id"]
        d["litellm_params"].update(api_key="unused", mock_response=(
            Exception(f"{ident} is unavailable") if ident in failing else f"served by {ident}"))
    return config


async def settle(observer: Observer, count: int) -> None:
    """LiteLLM runs its logging callbacks in the background: wait (10 s at most) until `count` calls are in."""
    deadline = time.monotonic() + 10
    while len(observer.calls) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


def litellm_router(config: dict):
    return litellm.Router(model_list=config["model_list"], num_retries=0, **config["router_settings"])


def documented_rule(name: str, key: str, canary_percent: float) -> str:
    """The bucket rule as the routing document spells it out, written again here independently."""
    digest = hashlib.sha256(f"{name}\0{key}".encode()).digest()
    bucket = struct.unpack(">Q", digest[:8])[0] % 10000
    return "canary" if bucket < round(canary_percent * 100) else "active"


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """support-agent: 1.0.0 active, 1.0.1 canary at 10 %, 1.0.2 shadow at 25 % (a real git registry)."""
    return live_registry(tmp_path_factory, NAME).root


def entry(version, percent, model_id, fallbacks=(), temperature=0.3, prompt_text=None):
    prompt = {"template": f"prompts/{version}.txt", "sha256": hashlib.sha256(version.encode()).hexdigest()}
    if prompt_text is not None:
        prompt["text"] = prompt_text
    out = {"version": version, "percent": percent, "model": {"provider": "openai", "id": model_id},
           "prompt": prompt, "config": {"temperature": temperature, "max_tokens": 256}}
    if fallbacks:
        out["fallbacks"] = [{"provider": "openai", "id": f} for f in fallbacks]
    return out


def fallback_document(canary_pct=20):
    return {"schema": "modelctl/v1", "name": NAME,
            "active": entry("2.0.0", 100 - canary_pct, "gpt-a-2025-01-01", ("gpt-a-fb-2025-01-01",),
                            prompt_text="You are the active assistant."),
            "canary": entry("2.1.0", canary_pct, "gpt-c-2025-01-01", ("gpt-c-fb1-2025-01-01", "gpt-c-fb2-2025-01-01"),
                            temperature=0.7, prompt_text="You are the canary assistant."),
            "shadow": entry("2.2.0", 30, "gpt-s-2025-01-01", prompt_text="You are the shadow."),
            "assignment": {"hash": "sha256", "bucket": "uint64_be(digest[0:8]) % 10000", "buckets": 10000,
                           "canary_when": "bucket < round(canary.percent * 100)"}}


# -- router_config --------------------------------------------------------------------------------

def test_router_config_has_a_deployment_per_served_version_weights_shadow_and_fallbacks():
    config = integration.router_config([fallback_document()])
    groups = [(d["model_name"], d["model_info"]["id"], d["litellm_params"].get("weight")) for d in config["model_list"]]
    assert groups == [
        (NAME, f"{NAME}@2.0.0", 80.0), (NAME, f"{NAME}@2.1.0", 20.0),
        (f"{NAME}/shadow", f"{NAME}@2.2.0", None),  # never in the weighted group
        (f"{NAME}/fallback-1", f"{NAME}@2.0.0#fallback-1", None),
        (f"{NAME}/fallback-1", f"{NAME}@2.1.0#fallback-1", None),
        (f"{NAME}/fallback-2", f"{NAME}@2.1.0#fallback-2", None)]
    assert config["router_settings"]["fallbacks"] == [{NAME: [f"{NAME}/fallback-1", f"{NAME}/fallback-2"]}]
    canary = config["model_list"][1]
    assert canary["litellm_params"] == {"model": "openai/gpt-c-2025-01-01", "max_tokens": 256, "temperature": 0.7,
                                        "weight": 20.0}
    assert canary["model_info"]["modelctl_bundle_sha256"] == serving.digest(fallback_document()["canary"])
    assert config["model_list"][4]["litellm_params"]["model"] == "openai/gpt-c-fb1-2025-01-01"
    # deterministic: the same documents in another order give the same bytes
    other = dict(fallback_document(), name="aaa-model")
    assert json.dumps(integration.router_config([fallback_document(), other])) == \
        json.dumps(integration.router_config([other, fallback_document()]))


def test_router_config_of_the_registry_document_builds_a_litellm_router(live):
    doc = modelctl.Registry(live).resolve(NAME)
    config = integration.router_config([doc])
    assert [(d["model_name"], d["model_info"]["id"]) for d in config["model_list"]] == [
        (NAME, f"{NAME}@1.0.0"), (NAME, f"{NAME}@1.0.1"), (f"{NAME}/shadow", f"{NAME}@1.0.2")]
    assert config["router_settings"] == {"fallbacks": []}
    router = litellm_router(mocked(config))
    assert sorted(d["model_info"]["id"] for d in router.registry().all()) == [
        f"{NAME}@1.0.0", f"{NAME}@1.0.1", f"{NAME}@1.0.2"]


def test_router_config_needs_no_litellm_and_nothing_else_in_modelctl_imports_it():
    code = ("import json, sys; from modelctl.integrations.litellm import router_config; "
            "print(json.dumps(router_config([json.loads(sys.argv[1])]), sort_keys=True)); "
            "assert not [m for m in sys.modules if m.split('.')[0] == 'litellm'], 'litellm was imported'")
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(fallback_document())], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == json.loads(json.dumps(integration.router_config([fallback_document()])))
    importers = [p.relative_to(ROOT).as_posix() for p in (ROOT / "modelctl").rglob("*.py")
                 if p.name != "litellm.py" and any(line.strip().startswith(("import litellm", "from litellm"))
                                                   for line in p.read_text().splitlines())]
    assert importers == []


# -- sticky routing -------------------------------------------------------------------------------

def test_20000_keys_route_as_resolve_says_and_stay_across_a_reload(live, tmp_path, run):
    reg = modelctl.Registry(live)
    doc = reg.resolve(NAME)
    path = tmp_path / "doc.json"
    path.write_text(json.dumps(doc))
    router = litellm_router(mocked(integration.router_config([doc])))
    serving_router = serving.Router.from_file(path)
    integration.attach(router, serving_router)
    keys = [f"user-{i}" for i in range(20_000)]

    async def route(batch):
        return [(await router.select(NAME, {"metadata": {integration.KEY: k}}))["model_info"]["id"] for k in batch]

    chosen = dict(zip(keys, run(route(keys))))
    version = {"active": doc["active"]["version"], "canary": doc["canary"]["version"]}
    for key in keys:  # the rule the document publishes, computed independently of modelctl
        assert chosen[key] == f"{NAME}@{version[documented_rule(NAME, key, doc['canary']['percent'])]}", key
    assert 1500 < sum(v.endswith(version["canary"]) for v in chosen.values()) < 2500
    # Registry.resolve(key=...) and the CLI agree on a sample of both roles
    sample = keys[:30] + [k for k in keys if chosen[k].endswith(version["canary"])][:20]
    for key in sample:
        assert chosen[key] == f"{NAME}@{reg.resolve(NAME, key=key)['key']['version']}"
    for key in sample[:2] + sample[-1:]:
        proc = run_cli("resolve", NAME, "--key", key, "--json", cwd=live)
        assert proc.returncode == 0, proc.stderr
        assert chosen[key] == f"{NAME}@{json.loads(proc.stdout)['key']['version']}"
    # a full request through the router lands on the same deployment
    async def complete(batch):
        return [(await router.acompletion(model=NAME, messages=[{"role": "user", "content": "hi"}], user=k))
                .choices[0].message.content for k in batch]
    assert run(complete(sample[:10] + sample[-10:])) == [f"served by {chosen[k]}" for k in sample[:10] + sample[-10:]]
    # the canary goes 10 % -> 20 %: keys below bucket 1000 and at or above 2000 keep their version
    wider = json.loads(json.dumps(doc))
    wider["canary"]["percent"], wider["active"]["percent"] = 20, 80
    path.write_text(json.dumps(wider))
    os.utime(path, ns=(1, 1))
    assert serving_router.maybe_reload()
    after = dict(zip(keys, run(route(keys))))
    moved = [k for k in keys if after[k] != chosen[k]]
    assert moved and all(1000 <= serving.routing.bucket(NAME, k) < 2000 for k in moved)
    assert all(after[k].endswith(version["canary"]) for k in moved)


# -- prompt, config, fallbacks, shadow ------------------------------------------------------------

@pytest.fixture
def gateway(tmp_path, observer):
    def build(failing=(), metrics=None, clock=None):
        path = tmp_path / "doc.json"
        path.write_text(json.dumps(fallback_document()))
        serving_router = serving.Router.from_file(path)
        router = litellm_router(mocked(integration.router_config([fallback_document()]), failing))
        extra = {"clock": clock} if clock else {}
        return integration.Gateway(router, serving_router, metrics=metrics, **extra), serving_router
    return build


def keys_by_role(serving_router, count=400):
    keys = [f"k{i}" for i in range(count)]
    return {role: [k for k in keys if serving_router.pick(NAME, k).role == role] for role in ("active", "canary")}


def test_the_bundles_prompt_and_config_reach_the_deployment(gateway, observer, run):
    gw, serving_router = gateway()
    roles = keys_by_role(serving_router)

    async def go():
        out = []
        for key in roles["active"][:3] + roles["canary"][:3]:
            response = await gw.acompletion(NAME, [{"role": "user", "content": "where is my order?"}], key=key)
            out.append((key, response.choices[0].message.content))
        await gw.drain()
        await settle(observer, 6 + sum(serving_router.pick(NAME, k).mirror for k, _ in out))
        return out

    answers = run(go())
    served = {c["metadata"][integration.KEY]: c for c in observer.calls if c["id"] in (f"{NAME}@2.0.0", f"{NAME}@2.1.0")}
    assert len(served) == 6
    for key, answer in answers:
        call = served[key]
        role = serving_router.pick(NAME, key).role
        version, prompt, temperature = (("2.0.0", "You are the active assistant.", 0.3) if role == "active"
                                        else ("2.1.0", "You are the canary assistant.", 0.7))
        assert answer == f"served by {NAME}@{version}"
        assert call["id"] == f"{NAME}@{version}"
        assert call["messages"] == [{"role": "system", "content": prompt},
                                    {"role": "user", "content": "where is my order?"}]
        assert call["params"]["temperature"] == temperature and call["params"]["max_tokens"] == 256
        assert call["metadata"][integration.KEY] == key


def test_a_reloaded_document_changes_prompt_and_config_in_place(gateway, observer, run, tmp_path):
    gw, serving_router = gateway()
    key = keys_by_role(serving_router)["canary"][0]
    changed = fallback_document()
    changed["canary"]["config"]["temperature"] = 0.1
    changed["canary"]["prompt"]["text"] = "You are the canary assistant, second edition."
    path = tmp_path / "doc.json"
    path.write_text(json.dumps(changed))
    os.utime(path, ns=(1, 1))

    async def go():
        await gw.acompletion(NAME, [{"role": "user", "content": "hi"}], key=key)
        await gw.drain()
        await settle(observer, 1)

    run(go())
    call = next(c for c in observer.calls if c["id"] == f"{NAME}@2.1.0")
    assert call["params"]["temperature"] == 0.1
    assert call["messages"][0]["content"] == "You are the canary assistant, second edition."


def test_the_readme_example_runs_in_a_registry_checkout(live):
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## LiteLLM"):]
    code = section[section.index("```python\n") + 10:section.index("```\n", section.index("```python\n") + 10)]
    code = code.replace("port=9108", "port=0")  # any free port here
    proc = subprocess.run([sys.executable, "-c", code], cwd=live, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    version = modelctl.Registry(live).resolve(NAME, key="user-42")["key"]["version"]
    assert proc.stdout.strip().splitlines()[-1] == f"Your order ships today. {NAME}@{version}"


def test_a_failing_deployment_falls_back_along_its_bundles_fallbacks(gateway, observer, run):
    # the canary and its first fallback fail: canary keys reach the canary's second fallback;
    # active keys still get the active deployment
    gw, serving_router = gateway(failing=(f"{NAME}@2.1.0", f"{NAME}@2.1.0#fallback-1"))
    roles = keys_by_role(serving_router)

    async def go(keys, settle_at=0):
        out = [(await gw.acompletion(NAME, [{"role": "user", "content": "hi"}], key=k)).choices[0].message.content
               for k in keys]
        await settle(observer, settle_at)
        return out

    assert run(go(roles["canary"][:4], settle_at=12)) == [f"served by {NAME}@2.1.0#fallback-2"] * 4
    assert run(go(roles["active"][:4])) == [f"served by {NAME}@2.0.0"] * 4
    tried = {(c["id"], c["ok"]) for c in observer.calls if c["metadata"].get(integration.KEY) == roles["canary"][0]}
    assert {(f"{NAME}@2.1.0", False), (f"{NAME}@2.1.0#fallback-1", False), (f"{NAME}@2.1.0#fallback-2", True)} <= tried
    # the fallback serves with the bundle's prompt and config
    last = [c for c in observer.calls if c["id"] == f"{NAME}@2.1.0#fallback-2"][0]
    assert last["messages"][0] == {"role": "system", "content": "You are the canary assistant."}
    assert last["params"]["temperature"] == 0.7

    # the active version's only fallback fails too: the caller sees the error
    gw, _ = gateway(failing=(f"{NAME}@2.0.0", f"{NAME}@2.0.0#fallback-1"))
    with pytest.raises(Exception, match="unavailable"):
        run(go(roles["active"][:1]))
    assert run(go(roles["canary"][:1])) == [f"served by {NAME}@2.1.0"]


def test_the_shadow_is_mirrored_for_exactly_the_keys_pick_says_and_never_answers(gateway, observer, run):
    gw, serving_router = gateway(failing=(f"{NAME}@2.2.0",))  # a failing shadow must not reach the caller
    keys = [f"m{i}" for i in range(120)]

    async def go():
        out = [(await gw.acompletion(NAME, [{"role": "user", "content": "q"}], key=k)).choices[0].message.content
               for k in keys]
        await gw.drain()
        await settle(observer, len(keys) + sum(serving_router.pick(NAME, k).mirror for k in keys))
        return out

    answers = run(go())
    assert all(a.startswith(f"served by {NAME}@2.0.0") or a.startswith(f"served by {NAME}@2.1.0") for a in answers)
    mirrored = {c["metadata"][integration.KEY] for c in observer.calls if c["id"] == f"{NAME}@2.2.0"}
    expected = {k for k in keys if serving_router.pick(NAME, k).mirror}
    assert mirrored == expected and 0 < len(expected) < len(keys)
    shadow_call = next(c for c in observer.calls if c["id"] == f"{NAME}@2.2.0")
    assert shadow_call["messages"][0] == {"role": "system", "content": "You are the shadow."}


def test_prompts_from_a_registry_checkout_are_verified(live, tmp_path):
    router = serving.Router.from_registry(live)
    load = integration.prompts_from_directory(live)
    bundle = router.pick(NAME, "user-1").bundle
    assert load(bundle) == (live / bundle.prompt["template"]).read_text()
    (live / bundle.prompt["template"]).write_text("edited after the commit\n")
    try:
        fresh = integration.prompts_from_directory(live)
        with pytest.raises(ValueError, match="does not match the bundle's prompt.sha256"):
            fresh(bundle)
    finally:
        git(live, "checkout", "--", bundle.prompt["template"])


# -- metrics: the template's queries read what the integration exports -----------------------------

@pytest.mark.parametrize("backend", ["prometheus_client", "pure"])
def test_metrics_scraped_by_prometheus_are_what_watch_reads(backend, gateway, tmp_path, run):
    binary = ensure_prometheus()
    if binary is None:
        pytest.skip("prometheus is not installed and cannot be installed here")
    ticks = iter(range(10**6))
    metrics = ServingMetrics(backend=backend)
    # the injected clock advances 250 ms between a request's start and its end: every request takes 250 ms
    gw, serving_router = gateway(failing=(f"{NAME}@2.1.0", f"{NAME}@2.1.0#fallback-1", f"{NAME}@2.1.0#fallback-2"),
                                 metrics=metrics, clock=lambda: next(ticks) * 0.25)
    keys = [f"u{i}" for i in range(60)]

    async def go():
        for k in keys:
            try:
                await gw.acompletion(NAME, [{"role": "user", "content": "q"}], key=k, segment="eu" if k < "u3" else "us")
            except Exception:
                pass
        await gw.drain()

    run(go())
    picks = [serving_router.pick(NAME, k) for k in keys]
    want = {"2.0.0": sum(p.role == "active" for p in picks), "2.1.0": sum(p.role == "canary" for p in picks)}
    assert want["2.1.0"] > 0
    queries = yamlio.load_file(ROOT / "registry-template" / "modelctl.yaml").data["metrics"]["queries"]
    with metrics.serve() as server, prometheus_server([f"127.0.0.1:{server.port}"], tmp_path / "prom",
                                                      binary=binary) as prom:
        provider = PrometheusProvider(prom.url, queries)
        deadline = time.monotonic() + 30
        while True:  # Prometheus scrapes every second: wait for a scrape with the numbers in it
            readings = provider.read(NAME, ["2.0.0", "2.1.0", "2.2.0"], since_seconds=60)
            done = all(readings.get(v) and "" in readings[v].segments for v in ("2.0.0", "2.1.0", "2.2.0"))
            if done or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        canary, active = readings["2.1.0"], readings["2.0.0"]
    assert canary.problems == {} and active.problems == {}
    whole = canary.segments[""]
    assert whole.requests == want["2.1.0"] and whole.events["errors"] == want["2.1.0"]  # every canary request failed
    assert active.segments[""].requests == want["2.0.0"] and active.segments[""].events["errors"] == 0
    assert set(active.segments) == {"", "eu", "us"}
    assert active.segments["eu"].requests + active.segments["us"].requests == want["2.0.0"]
    # at least 250 ms per request, counted in milliseconds: none at or below le=200
    buckets = dict(active.segments[""].latency_buckets)
    # (the mirrors run concurrently and share the clock, so a request may span more than one tick)
    assert buckets[200.0] == 0 and 0 < buckets[300.0] and buckets[float("inf")] == want["2.0.0"]
    # the shadow's mirrored requests are counted under its own version
    assert readings["2.2.0"].segments[""].requests == sum(p.mirror for p in picks)


def test_timed_and_observe_count_the_same_in_both_backends():
    from prometheus_client.parser import text_string_to_metric_families

    doc = fallback_document()
    samples = {}
    for backend in ("prometheus_client", "pure"):
        ticks = iter([0.0, 0.4, 1.0, 3.5])
        metrics = ServingMetrics(backend=backend, clock=ticks.__next__)
        snapshot = serving.Snapshot({NAME: serving.compile_document(doc)})
        pick = next(snapshot.pick(NAME, f"k{i}") for i in range(100) if snapshot.pick(NAME, f"k{i}").role == "canary")
        with metrics.timed(pick, segment="eu"):   # 400 ms, fine
            pass
        with pytest.raises(RuntimeError), metrics.timed(pick):   # 2.5 s, an error
            raise RuntimeError("provider down")
        metrics.observe(NAME, "2.0.0", "active", 0.05, cost=0.002)
        metrics.observe(NAME, "2.0.0", "active", 0.05, cost=float("nan"))  # not a cost: left out
        text = metrics.exposition().decode()
        samples[backend] = {(s.name, tuple(sorted(s.labels.items()))): s.value
                            for family in text_string_to_metric_families(text) for s in family.samples
                            if not s.name.endswith("_created")}
    assert samples["pure"] == samples["prometheus_client"]
    got = samples["pure"]

    def val(name, version="2.1.0", role="canary", segment="", **extra):
        labels = {"model": NAME, "version": version, "role": role, "segment": segment, **extra}
        return got[(name, tuple(sorted(labels.items())))]

    assert val("llm_requests_total") == 1 and val("llm_errors_total") == 1
    assert val("llm_requests_total", segment="eu") == 1 and val("llm_errors_total", segment="eu") == 0
    assert val("llm_latency_ms_bucket", segment="eu", le="400.0") == 1
    assert val("llm_latency_ms_bucket", segment="eu", le="300.0") == 0
    assert val("llm_latency_ms_bucket", le="2000.0") == 0 and val("llm_latency_ms_bucket", le="3000.0") == 1
    assert val("llm_latency_ms_sum") == 2500.0
    assert val("llm_cost_total", "2.0.0", "active") == pytest.approx(0.002)
    assert val("llm_requests_total", "2.0.0", "active") == 2


# -- a canary limited to a caller segment (issue 15 §2) -------------------------------------------

def test_a_segment_canary_serves_only_requests_whose_attributes_are_in_it(tmp_path, observer, run):
    from prometheus_client.parser import text_string_to_metric_families

    doc = fallback_document(canary_pct=50)
    doc["canary"]["segment"] = {"name": "internal", "attribute": "tier", "equals": "internal"}
    path = tmp_path / "doc.json"
    path.write_text(json.dumps(doc))
    serving_router = serving.Router.from_file(path)
    router = litellm_router(mocked(integration.router_config([doc])))
    metrics = ServingMetrics(backend="pure")
    gw = integration.Gateway(router, serving_router, metrics=metrics)
    low = [k for k in (f"k{i}" for i in range(400)) if serving.routing.bucket(NAME, k) < 5000][:3]
    internal = {"tier": "internal"}

    async def go():
        got = []
        for key in low:
            for attributes in (internal, {"tier": "external"}, None):
                response = await gw.acompletion(NAME, [{"role": "user", "content": "hi"}], key=key,
                                                attributes=attributes)
                got.append((key, attributes, response.choices[0].message.content))
        # the routing plugin alone (no gateway) reads the attributes from the request's metadata
        plain = await router.acompletion(model=NAME, messages=[{"role": "user", "content": "hi"}],
                                         metadata={integration.KEY: low[0], integration.ATTRIBUTES: internal})
        await gw.drain()
        return got, plain.choices[0].message.content

    answers, plain = run(go())
    weights = {d["model_info"]["id"]: d["litellm_params"].get("weight") for d in integration.router_config([doc])["model_list"]}
    assert weights[f"{NAME}@2.0.0"] == 100.0 and weights[f"{NAME}@2.1.0"] == 0.0
    for key, attributes, answer in answers:
        version = "2.1.0" if attributes == internal else "2.0.0"
        assert answer == f"served by {NAME}@{version}", (key, attributes)
    assert plain == f"served by {NAME}@2.1.0"
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(metrics.exposition().decode()) for s in family.samples}
    in_segment = {"model": NAME, "version": "2.1.0", "role": "canary", "segment": "internal"}
    assert samples[("llm_requests_total", tuple(sorted(in_segment.items())))] == 3


# -- routes (issue 15): a route's group and its fallback chain --------------------------------------

def routed_fallback_document():
    """fallback_document plus route summarise (pinned to 1.9.0, ordered chain of two) and route chat (follows the
    model, weighted chain 3:1)."""
    doc = fallback_document()
    doc["routes"] = {
        "summarise": {"active": entry("1.9.0", 100, "gpt-old-2025-01-01", prompt_text="You summarise."),
                      "canary": None, "follows_model": False,
                      "fallback": {"policy": "ordered", "chain": [{"provider": "anthropic", "id": "claude-x-20250101"},
                                                                  {"provider": "openai", "id": "gpt-y-2025-01-01"}]}},
        "chat": {"active": doc["active"], "canary": doc["canary"], "follows_model": True,
                 "fallback": {"policy": "weighted", "chain": [{"provider": "openai", "id": "gpt-w3-2025-01-01", "weight": 3},
                                                              {"provider": "openai", "id": "gpt-w1-2025-01-01", "weight": 1}]}},
    }
    return doc


def test_router_config_gives_each_route_a_group_and_its_fallback_chain():
    config = integration.router_config([routed_fallback_document()])
    groups = {}
    for d in config["model_list"]:
        groups.setdefault(d["model_name"], []).append(d["model_info"]["id"])
    assert groups[f"{NAME}/route/summarise"] == [f"{NAME}@1.9.0~summarise"]
    assert groups[f"{NAME}/route/summarise/fallback-1"] == [f"{NAME}~summarise#fallback-1:anthropic/claude-x-20250101"]
    assert groups[f"{NAME}/route/summarise/fallback-2"] == [f"{NAME}~summarise#fallback-2:openai/gpt-y-2025-01-01"]
    assert groups[f"{NAME}/route/chat"] == [f"{NAME}@2.0.0~chat", f"{NAME}@2.1.0~chat"]
    # weighted: every step can serve every entry; the key decides which
    assert len(groups[f"{NAME}/route/chat/fallback-1"]) == len(groups[f"{NAME}/route/chat/fallback-2"]) == 2
    assert {f"{NAME}/route/summarise": [f"{NAME}/route/summarise/fallback-1", f"{NAME}/route/summarise/fallback-2"]} \
        in config["router_settings"]["fallbacks"]
    # the model's own groups are unchanged by routes
    assert integration.router_config([fallback_document()])["model_list"] == \
        [d for d in config["model_list"] if "/route/" not in d["model_name"]]


@pytest.fixture
def route_gateway(tmp_path, observer):
    def build(failing=()):
        path = tmp_path / "doc.json"
        path.write_text(json.dumps(routed_fallback_document()))
        serving_router = serving.Router.from_file(path)
        router = litellm_router(mocked(integration.router_config([routed_fallback_document()]), failing))
        return integration.Gateway(router, serving_router), serving_router
    return build


def test_a_failing_route_falls_back_along_its_own_chain_in_order_or_by_weight(route_gateway, observer, run):
    summarise_fb1 = f"{NAME}~summarise#fallback-1:anthropic/claude-x-20250101"
    gw, serving_router = route_gateway(failing=(f"{NAME}@1.9.0~summarise", summarise_fb1))

    async def go(keys, route, settle_at=0):
        out = [(await gw.acompletion(NAME, [{"role": "user", "content": "hi"}], key=k, route=route))
               .choices[0].message.content for k in keys]
        await settle(observer, settle_at)
        return out

    keys = [f"k{i}" for i in range(8)]
    # ordered: the pinned version fails, then the first fallback: the second answers, with the route's prompt
    assert run(go(keys[:3], "summarise", settle_at=9)) == [
        f"served by {NAME}~summarise#fallback-2:openai/gpt-y-2025-01-01"] * 3
    tried = [(c["id"], c["ok"]) for c in observer.calls
             if c["metadata"].get(integration.KEY) == keys[0] and "summarise" in c["id"]]  # not the shadow's mirror
    assert tried[:3] == [(f"{NAME}@1.9.0~summarise", False), (summarise_fb1, False),
                         (f"{NAME}~summarise#fallback-2:openai/gpt-y-2025-01-01", True)]
    last = [c for c in observer.calls if c["ok"] and "summarise" in c["id"]][-1]
    assert last["messages"][0] == {"role": "system", "content": "You summarise."}
    assert last["metadata"][integration.ROUTE] == "summarise"
    # the model itself and its other routes are not affected
    assert run(go(keys[:1], None)) == [f"served by {NAME}@{serving_router.pick(NAME, keys[0]).version}"]
    # weighted: when chat's versions fail, each key goes to its own first choice (routing.fallback_order)
    gw, serving_router = route_gateway(failing=(f"{NAME}@2.0.0~chat", f"{NAME}@2.1.0~chat"))
    answers = run(go(keys, "chat"))
    for k, answer in zip(keys, answers):
        first = serving_router.pick(NAME, k, route="chat").fallbacks[0]
        assert answer == f"served by {NAME}~chat#fallback-1:openai/{first['id']}"
    assert {a.rsplit("/", 1)[1] for a in answers} == {"gpt-w3-2025-01-01", "gpt-w1-2025-01-01"} or len(keys) < 4
