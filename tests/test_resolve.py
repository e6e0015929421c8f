"""resolve: the routing document a gateway reads, key -> version, and the Python API behind the CLI."""
import json

import pytest
from conftest import git, new_registry, run_cli
from lifecyclekit import live_registry

import modelctl
from modelctl import routing
from modelctl.registry import Registry

NAME = "support-agent"


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """1.0.0 active, 1.0.1 in canary at 10 %, 1.0.2 shadowed at 25 % (read only)."""
    return live_registry(tmp_path_factory, NAME).root


def test_routing_document(live):
    proc = run_cli("resolve", NAME, "--json", cwd=live)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["schema"] == "modelctl/v1" and doc["name"] == NAME
    assert doc["commit"] == git(live, "rev-parse", "HEAD").strip()
    assert (doc["active"]["version"], doc["active"]["percent"]) == ("1.0.0", 90)
    assert (doc["canary"]["version"], doc["canary"]["percent"]) == ("1.0.1", 10)
    assert (doc["shadow"]["version"], doc["shadow"]["percent"]) == ("1.0.2", 25)
    assert doc["active"]["model"] == {"provider": "openai", "id": "gpt-4.1-mini-2025-04-14"}
    assert doc["canary"]["prompt"]["template"] == "prompts/p2.txt" and len(doc["canary"]["prompt"]["sha256"]) == 64
    assert doc["shadow"]["config"] == {"temperature": 0.5, "max_tokens": 1024}
    assert doc["assignment"]["buckets"] == 10_000 and doc["assignment"]["hash"] == "sha256"
    assert "key" not in doc


def test_routing_table(live):
    proc = run_cli("resolve", NAME, cwd=live)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines()[1:]]
    assert rows[0] == ["ROLE", "VERSION", "TRAFFIC", "MODEL", "PROMPT", "SHA256"]
    assert [r[:3] for r in rows[1:]] == [["active", "1.0.0", "90%"], ["canary", "1.0.1", "10%"],
                                         ["shadow", "1.0.2", "25%"]]


def test_key_resolves_to_the_version_that_serves_it(live):
    reg = Registry(live)
    served = {}
    for key in (f"user-{i}" for i in range(60)):
        expected = "1.0.1" if routing.bucket(NAME, key) < 1000 else "1.0.0"
        doc = reg.resolve(NAME, key=key)
        assert doc["key"]["version"] == expected, key
        assert doc["key"]["role"] == ("canary" if expected == "1.0.1" else "active")
        served[key] = expected
    assert set(served.values()) == {"1.0.0", "1.0.1"}  # the shadow (1.0.2) never serves a key
    canary_key = next(k for k, v in served.items() if v == "1.0.1")
    for key in (canary_key, "user-0"):
        proc = run_cli("resolve", NAME, "--key", key, cwd=live)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == served[key] + "\n"
        assert f"bucket {routing.bucket(NAME, key)}" in proc.stderr


def test_test_vectors_resolve_through_the_cli(live):
    # user-42 is in bucket 4527 (README table): at 10 % it stays with the active version
    proc = run_cli("resolve", NAME, "--key", "user-42", "--json", cwd=live)
    doc = json.loads(proc.stdout)
    assert doc["key"] == {"key": "user-42", "bucket": 4527, "version": "1.0.0", "role": "active"}


def test_resolve_a_model_with_nothing_active(tmp_path, write_bundle):
    reg = Registry(new_registry(tmp_path / "r"))
    reg.register(write_bundle(version="1.0.0"))
    doc = reg.resolve(NAME, key="user-42")
    assert doc["active"] is None and doc["canary"] is None and doc["key"]["version"] is None
    proc = run_cli("resolve", NAME, cwd=reg.root)
    assert proc.returncode == 0 and "no active version" in proc.stderr


def test_resolve_unknown_model_is_exit_2(live):
    proc = run_cli("resolve", "nope", cwd=live)
    assert proc.returncode == 2 and proc.stderr.startswith("error: no model named 'nope'")


def test_the_python_api_does_what_the_cli_does(registry, write_bundle):
    """A script drives a whole lifecycle through modelctl.Registry; the CLI reads the same state."""
    reg = modelctl.Registry(registry)
    out = reg.register(write_bundle("a.yaml", version="1.0.0"))
    assert out.result["version"] == "1.0.0" and out.tags == [f"{NAME}@v1.0.0"]
    reg.register(write_bundle("b.yaml", version="1.0.1", parent="1.0.0", prompt="prompts/p2.txt"))
    reg.promote(NAME, "1.0.0", "staging")
    reg.promote(NAME, "1.0.0", "active", push=False)
    reg.promote(NAME, "1.0.1", "staging")
    shadow = reg.shadow(NAME, "1.0.1", 10, requests_per_day=50_000)
    assert shadow.result["cost"]["per_day"] == pytest.approx(12.0)
    canary = reg.canary(NAME, "1.0.1", 5)
    assert canary.result["canary"]["percent"] == 5 and canary.commit == git(registry, "rev-parse", "HEAD").strip()
    assert reg.canary(NAME, "1.0.1", 5).noop
    status = reg.status(NAME)["models"][0]
    assert status["active"] == "1.0.0" and status["canary"]["version"] == "1.0.1"
    cli = json.loads(run_cli("resolve", NAME, "--json", cwd=registry).stdout)
    assert cli == reg.resolve(NAME)
    back = reg.rollback(NAME, reason="script says so", expect_canary="1.0.1")
    assert back.result["hold"]["version"] == "1.0.1"
    assert reg.log(NAME, limit=1)["events"][0]["reason"] == "script says so"
    assert reg.which(NAME, "now", key="user-42")["served_by"] == "1.0.0"
    review = reg.promote(NAME, "1.0.1", "archived", branch="retire-1.0.1")
    assert review.branch == "retire-1.0.1" and review.tags == []
    with pytest.raises(modelctl.errors.TransitionError, match="on hold"):
        reg.canary(NAME, "1.0.1", 5)
