"""Shared fixtures: real git registries in temporary directories, identities and dates pinned."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

BUNDLE = """\
apiVersion: modelctl/v1
kind: Bundle
name: {name}
version: "{version}"
{parent}model:
  provider: {provider}
  id: {model_id}
prompt:
  template: {prompt}
config:
  temperature: {temperature}
  max_tokens: 1024
baseline:
  error_rate: {error_rate}
  latency_p95_ms: 890
  cost_per_request: 0.0012
  requests: 12500
"""


def bundle_text(name="support-agent", version="1.0.0", parent=None, provider="openai",
                model_id="gpt-4.1-mini-2025-04-14", prompt="prompts/p1.txt", temperature=0.3,
                error_rate=0.01) -> str:
    """A valid bundle file's text with the given fields."""
    return BUNDLE.format(name=name, version=version, parent=f'parent: "{parent}"\n' if parent else "",
                         provider=provider, model_id=model_id, prompt=prompt, temperature=temperature,
                         error_rate=error_rate)


IDENTITY = {"GIT_AUTHOR_NAME": "Ada Tester", "GIT_AUTHOR_EMAIL": "ada@example.com",
            "GIT_COMMITTER_NAME": "Ada Tester", "GIT_COMMITTER_EMAIL": "ada@example.com"}


def pin_env(mp, home) -> None:
    """Pin identities, isolate HOME and git config, never read the developer's settings."""
    mp.setenv("HOME", str(home))
    mp.setenv("GIT_CONFIG_NOSYSTEM", "1")
    mp.setenv("GIT_CONFIG_GLOBAL", str(home / ".gitconfig"))
    for key, value in IDENTITY.items():
        mp.setenv(key, value)
    for key in ("MODELCTL_REGISTRY", "MODELCTL_FAULT", "MODELCTL_DEBUG", "FORCE_COLOR", "GIT_DIR", "GIT_INDEX_FILE",
                "GIT_AUTHOR_DATE", "GIT_COMMITTER_DATE"):
        mp.delenv(key, raising=False)
    mp.setenv("NO_COLOR", "1")


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory, monkeypatch):
    pin_env(monkeypatch, tmp_path_factory.mktemp("home"))


def run_cli(*args, cwd=None, env=None, input=None) -> subprocess.CompletedProcess:
    """Run the real `modelctl` (python -m modelctl) in a subprocess."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
    if env:
        full_env.update(env)
    return subprocess.run([sys.executable, "-m", "modelctl", *map(str, args)], cwd=cwd, env=full_env,
                          capture_output=True, text=True, input=input, timeout=120)


def git(repo, *args) -> str:
    """git output in a repository."""
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout


def repo_state(repo) -> dict:
    """Everything a write could change: refs, HEAD, index, work tree listing and contents."""
    refs = git(repo, "for-each-ref", "--format=%(refname) %(objectname)")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout
    status = git(repo, "status", "--porcelain", "--untracked-files=all", "--ignored")
    files = {}
    for path in sorted(Path(repo).rglob("*")):
        if ".git" in path.relative_to(repo).parts or not path.is_file():
            continue
        files[str(path.relative_to(repo))] = path.read_bytes()
    return {"refs": refs, "head": head, "status": status, "files": files}


@pytest.fixture
def registry(tmp_path):
    """A fresh registry (modelctl init) with two prompt files committed."""
    return new_registry(tmp_path / "reg")


def new_registry(path):
    """`modelctl init` plus the two prompt files the bundles here use, committed."""
    from modelctl import ops

    ops.init(path)
    (path / "prompts" / "p1.txt").write_text("You are helpful.\n")
    (path / "prompts" / "p2.txt").write_text("You are very helpful.\n")
    git(path, "add", "prompts")
    git(path, "commit", "-q", "-m", "prompts")
    return path


# 1.0.0, then one change at a time: the prompt (1.0.1), the temperature (1.0.2, 1.0.3)
CHAIN = [dict(version="1.0.0"), dict(version="1.0.1", parent="1.0.0", prompt="prompts/p2.txt"),
         dict(version="1.0.2", parent="1.0.1", prompt="prompts/p2.txt", temperature=0.5),
         dict(version="1.0.3", parent="1.0.2", prompt="prompts/p2.txt", temperature=0.6)]


def register_chain(reg, drafts, count=4) -> None:
    """Register the first `count` versions of CHAIN, drafting their bundles in `drafts`."""
    for fields in CHAIN[:count]:
        f = drafts / f"{fields['version']}.yaml"
        f.write_text(bundle_text(**fields))
        reg.register(f)


@pytest.fixture
def write_bundle(tmp_path):
    """Write a bundle file outside the registry and return its path."""
    def _write(filename="b.yaml", **fields):
        path = tmp_path / "in" / filename
        path.parent.mkdir(exist_ok=True)
        path.write_text(bundle_text(**fields))
        return path
    return _write


@pytest.fixture
def two_versions(registry, write_bundle):
    """A registry with support-agent 1.0.0 and 1.0.1 registered (the second on prompts/p2.txt)."""
    assert run_cli("register", write_bundle(version="1.0.0"), cwd=registry).returncode == 0
    f = write_bundle("c.yaml", version="1.0.1", parent="1.0.0", prompt="prompts/p2.txt", error_rate=0.012)
    assert run_cli("register", f, cwd=registry).returncode == 0
    return registry


@pytest.fixture(scope="session")
def gto_bin(tmp_path_factory):
    """The bin directory of a virtualenv with gto from PyPI, installed once per session (tests/test_gto.py)."""
    from test_gto import install_gto

    return install_gto(tmp_path_factory)
