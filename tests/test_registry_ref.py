"""The Python API as a gateway sidecar uses it: `Registry(path, ref=...)` reads a ref by default,
and a bare repository (a mirror with no work tree) is a registry to read."""
from __future__ import annotations

import json
import subprocess

import pytest
from conftest import git, repo_state, run_cli
from lifecyclekit import live_registry

import modelctl
from modelctl.errors import UsageError

NAME = "support-agent"


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    return live_registry(tmp_path_factory, NAME)


@pytest.fixture(scope="module")
def bare(live, tmp_path_factory):
    where = tmp_path_factory.mktemp("mirror") / "registry.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(live.root), str(where)], check=True)
    return where


def test_a_bare_mirror_reads_like_the_clone(live, bare):
    mirror = modelctl.Registry(bare)
    assert mirror.root == bare.resolve()
    assert mirror.status() == live.status()
    assert mirror.resolve(NAME, key="user-42") == live.resolve(NAME, key="user-42")
    assert mirror.log(NAME, limit=3) == live.log(NAME, limit=3)
    proc = run_cli("-C", bare, "resolve", NAME, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == live.resolve(NAME)


def test_reads_default_to_the_ref_the_registry_was_opened_at(live):
    before = git(live.root, "rev-parse", "HEAD~1").strip()  # before the last move (the shadow of 1.0.2)
    old = modelctl.Registry(live.root, ref=before)
    assert old.ref == before
    assert old.status()["commit"] == before
    assert old.resolve(NAME)["shadow"] is None and old.resolve(NAME)["canary"]["version"] == "1.0.1"
    assert live.resolve(NAME)["shadow"]["version"] == "1.0.2"
    assert old.resolve(NAME, ref="HEAD")["shadow"]["version"] == "1.0.2"  # an explicit ref still wins
    assert old.log(NAME)["events"][0]["commit"] == before
    assert old.show(NAME)["name"] == NAME


def test_a_ref_that_names_nothing_is_refused_when_opened(live):
    before = repo_state(live.root)
    with pytest.raises(UsageError, match="nope does not name a commit"):
        modelctl.Registry(live.root, ref="nope")
    assert repo_state(live.root) == before


def test_the_serving_client_builds_from_a_bare_mirror(live, bare):
    from modelctl.serving import Router

    router = Router.from_registry(bare)
    for key in ("a", "b", "user-42", "x" * 50):
        picked = router.pick(NAME, key)
        assert picked.version == live.resolve(NAME, key=key)["key"]["version"]
