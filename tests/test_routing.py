"""Key -> version assignment: the documented hash, its traffic shares, and its stability."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelctl import routing
from modelctl.errors import NotFound

ROOT = Path(__file__).resolve().parents[1]


def dep(active="2.3.1", canary=None, shadow=None):
    return {"apiVersion": "modelctl/v1", "kind": "Deployment", "name": "support-agent",
            "active": active, "previous": None, "canary": canary, "shadow": shadow,
            "versions": {}, "hold": None}


@pytest.mark.parametrize("name,key,expected", routing.TEST_VECTORS)
def test_vectors(name, key, expected):
    assert routing.bucket(name, key) == expected


@pytest.mark.parametrize("name,key,expected", routing.TEST_VECTORS)
def test_vectors_follow_the_written_spec(name, key, expected):
    # The README's recipe, spelled out independently of routing.bucket.
    digest = hashlib.sha256(name.encode() + b"\x00" + key.encode()).hexdigest()
    assert int(digest[:16], 16) % 10000 == expected


def test_the_name_is_part_of_the_hash():
    keys = [f"user-{i}" for i in range(200)]
    a = [routing.bucket("support-agent", k) for k in keys]
    b = [routing.bucket("search-ranker", k) for k in keys]
    assert sum(x == y for x, y in zip(a, b)) < 5


@pytest.mark.parametrize("percent", [1, 5, 10, 25, 50, 0.5])
def test_canary_share_over_100k_keys_is_within_one_point(percent):
    d = dep(canary={"version": "2.4.0", "percent": percent})
    n = 100_000
    hits = sum(routing.assign(d, f"user-{i}") == "2.4.0" for i in range(n))
    assert abs(hits / n * 100 - percent) < 1.0


def test_assign_without_canary_is_always_active():
    d = dep()
    assert {routing.assign(d, f"k{i}") for i in range(1000)} == {"2.3.1"}


def test_shadow_never_serves():
    d = dep(shadow={"version": "2.5.0", "percent": 100})
    assert {routing.assign(d, f"k{i}") for i in range(1000)} == {"2.3.1"}


def test_no_active_version_serves_nothing():
    assert routing.assign(dep(active=None), "user-42") is None


def test_a_key_below_the_threshold_goes_to_the_canary():
    name, key, b = next(v for v in routing.TEST_VECTORS if v[2] < 500)
    assert routing.assign(dep(canary={"version": "2.4.0", "percent": 5}), key) == "2.4.0"
    assert routing.assign(dep(canary={"version": "2.4.0", "percent": b / 100}), key) == "2.3.1"
    assert routing.assign(dep(canary={"version": "2.4.0", "percent": (b + 1) / 100}), key) == "2.4.0"


@settings(max_examples=300, deadline=None)
@given(
    key=st.text(max_size=40),
    p1=st.integers(min_value=0, max_value=10000),
    p2=st.integers(min_value=0, max_value=10000),
)
def test_raising_the_percent_never_moves_a_key_back_to_stable(key, p1, p2):
    low, high = sorted((p1 / 100, p2 / 100))
    at_low = routing.assign(dep(canary={"version": "2.4.0", "percent": low}), key)
    at_high = routing.assign(dep(canary={"version": "2.4.0", "percent": high}), key)
    if at_low == "2.4.0":
        assert at_high == "2.4.0"


@settings(max_examples=200, deadline=None)
@given(key=st.text(max_size=40))
def test_bucket_is_in_range(key):
    assert 0 <= routing.bucket("support-agent", key) < routing.BUCKETS


def test_same_buckets_in_another_process_with_another_hash_seed():
    keys = [f"user-{i}" for i in range(500)] + ["", "ключ", "a\x00b"]
    here = [routing.bucket("support-agent", k) for k in keys]
    code = (
        "import json, sys; from modelctl import routing; "
        "keys = json.load(sys.stdin); "
        "print(json.dumps([routing.bucket('support-agent', k) for k in keys]))"
    )
    for seed in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
        out = subprocess.run([sys.executable, "-c", code], input=json.dumps(keys), env=env,
                             capture_output=True, text=True, check=True, cwd=ROOT)
        assert json.loads(out.stdout) == here


BUNDLE = {
    "apiVersion": "modelctl/v1", "kind": "Bundle", "name": "support-agent",
    "model": {"provider": "openai", "id": "gpt-4.1-mini-2025-04-14", "adapter": "support-lora-v7"},
    "prompt": {"template": "prompts/support/v3.2.txt", "sha256": "9f2c" + "0" * 60},
    "config": {"temperature": 0.3, "max_tokens": 1024},
    "baseline": {"error_rate": 0.01},
}


def bundle(version, **model):
    b = json.loads(json.dumps(BUNDLE))
    b["version"] = version
    b["model"].update(model)
    return b


def test_routing_document_resolves_active_canary_and_shadow():
    d = dep(canary={"version": "2.4.0", "percent": 5, "started": "2026-04-20T10:00:00Z"},
            shadow={"version": "2.5.0", "percent": 100})
    bundles = {v: bundle(v) for v in ("2.3.1", "2.4.0", "2.5.0")}
    bundles["2.3.1"]["model"].pop("adapter")
    doc = routing.routing_document(d, bundles)
    assert doc["schema"] == "modelctl/v1" and doc["name"] == "support-agent"
    assert doc["active"] == {
        "version": "2.3.1", "percent": 95,
        "model": {"provider": "openai", "id": "gpt-4.1-mini-2025-04-14"},
        "prompt": {"template": "prompts/support/v3.2.txt", "sha256": "9f2c" + "0" * 60},
        "config": {"temperature": 0.3, "max_tokens": 1024},
    }
    assert doc["canary"]["version"] == "2.4.0" and doc["canary"]["percent"] == 5
    assert doc["canary"]["model"]["adapter"] == "support-lora-v7"
    assert doc["shadow"]["version"] == "2.5.0" and doc["shadow"]["percent"] == 100
    assert doc["assignment"]["buckets"] == 10000
    json.dumps(doc)  # a gateway reads it as JSON


def test_routing_document_without_canary_serves_everything_from_active():
    doc = routing.routing_document(dep(), {"2.3.1": bundle("2.3.1")})
    assert doc["active"]["percent"] == 100
    assert doc["canary"] is None and doc["shadow"] is None


def test_routing_document_does_not_share_bundle_objects():
    b = bundle("2.3.1")
    doc = routing.routing_document(dep(), {"2.3.1": b})
    doc["active"]["config"]["temperature"] = 9
    assert b["config"]["temperature"] == 0.3


def test_routing_document_needs_every_bundle():
    with pytest.raises(NotFound, match="bundle 2.4.0 of support-agent is missing"):
        routing.routing_document(dep(canary={"version": "2.4.0", "percent": 5}), {"2.3.1": bundle("2.3.1")})
