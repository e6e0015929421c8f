"""A model with many versions (issue 9 §5): the deployment file stays small and always readable.

Registered versions are not listed in `versions:`, archived ones are runs under `archived:`;
files in the older form (every version listed) still load and are rewritten compactly; a write
that would make the file unreadable is refused before anything is written. Timing lives in
benchmarks/versions.py.
"""
from __future__ import annotations

import hashlib

import pytest
import yaml as pyyaml
from conftest import git, repo_state, run_cli

NAME = "support-agent"


def bundle(version: str, temperature: float) -> str:
    sha = hashlib.sha256(b"You are helpful.\n").hexdigest()
    return (f'apiVersion: modelctl/v1\nkind: Bundle\nname: {NAME}\nversion: "{version}"\n'
            f"model:\n  provider: openai\n  id: gpt-4.1-mini-2025-04-14\nprompt:\n  template: prompts/p1.txt\n"
            f'  sha256: "{sha}"\nconfig:\n  temperature: {temperature}\nbaseline:\n  error_rate: 0.01\n'
            f"  latency_p95_ms: 890\n  cost_per_request: 0.0012\n  requests: 12500\n")


def legacy_registry(registry, n: int, statuses: dict[str, str] | None = None, tagged=()) -> list[str]:
    """n versions committed at once in the older form (every version listed), as earlier modelctl wrote it."""
    versions = [f"1.{i // 100}.{i % 100}" for i in range(n)]
    (registry / "bundles" / NAME).mkdir(parents=True, exist_ok=True)
    for i, v in enumerate(versions):
        (registry / "bundles" / NAME / f"{v}.yaml").write_text(bundle(v, round(0.1 + (i % 50) / 100, 2)))
    status = {v: "registered" for v in versions}
    status.update(statuses or {})
    active = next((v for v, s in status.items() if s == "active"), None)
    lines = "".join(f'  "{v}": {s}\n' for v, s in status.items())
    (registry / "deployments" / f"{NAME}.yaml").write_text(
        f"apiVersion: modelctl/v1\nkind: Deployment\nname: {NAME}\n"
        f"active: {'null' if active is None else repr(active).replace(chr(39), chr(34))}\n"
        f"previous: null\ncanary: null\nshadow: null\nversions:\n{lines}hold: null\n")
    git(registry, "add", "bundles", "deployments")
    git(registry, "commit", "-q", "-m", f"{n} versions of {NAME}")
    for v in tagged:
        git(registry, "tag", "-a", "-m", f"modelctl: register {NAME} {v}", f"{NAME}@v{v}")
    return versions


def on_disk(registry) -> tuple[dict, int]:
    raw = git(registry, "show", f"HEAD:deployments/{NAME}.yaml")
    return pyyaml.safe_load(raw), len(raw.encode())


def test_registered_versions_are_not_listed_and_statuses_read_back(registry, tmp_path):
    from modelctl import Registry

    versions = legacy_registry(registry, 300, {"1.2.0": "active", "1.1.99": "deprecated"}, tagged=["1.2.5"])
    legacy_size = on_disk(registry)[1]
    reg = Registry(registry)
    reg.promote(NAME, "1.2.5", "staging")
    data, size = on_disk(registry)
    assert data["versions"] == {"1.2.0": "active", "1.1.99": "deprecated", "1.2.5": "staging"}
    assert "archived" not in data and size < 400 < legacy_size
    shown = {row["version"]: row["status"] for row in reg.show(NAME)["versions"]}
    assert len(shown) == 300 and shown["1.0.0"] == "registered" and shown["1.2.5"] == "staging"
    assert shown["1.2.0"] == "active" and shown["1.1.99"] == "deprecated"
    row = reg.status(NAME)["models"][0]
    assert (row["versions"], row["latest"]) == (300, versions[-1])
    # check agrees: an unlisted bundle is registered, not a problem
    proc = run_cli("check", cwd=registry)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_new_registration_leaves_the_file_as_small_as_it_was(registry, tmp_path):
    versions = legacy_registry(registry, 120, {"1.1.0": "active"}, tagged=["1.1.1"])
    proc = run_cli("promote", NAME, "1.1.1", "--to", "archived", cwd=registry)  # any write rewrites compactly
    assert proc.returncode == 0, proc.stderr
    before = on_disk(registry)[1]
    f = tmp_path / "new.yaml"
    f.write_text(bundle("1.2.0", 0.9).replace('version: "1.2.0"\n', f'version: "1.2.0"\nparent: "{versions[-1]}"\n'))
    proc = run_cli("register", f, "--allow-multi-change", cwd=registry)
    assert proc.returncode == 0, proc.stderr
    data, after = on_disk(registry)
    assert after == before and "1.2.0" not in data["versions"]
    assert run_cli("show", f"{NAME}@1.2.0", "--json", cwd=registry).stdout.count('"status": "registered"') == 1


def test_archived_versions_are_written_as_runs_and_read_back(registry):
    from modelctl import Registry

    statuses = {f"1.0.{i}": "archived" for i in range(0, 40)}
    statuses.update({f"1.0.{i}": "archived" for i in range(42, 60)})
    statuses.update({"1.0.41": "deprecated", "1.1.0": "active", "1.0.70": "archived"})
    legacy_registry(registry, 150, statuses, tagged=["1.0.80", "1.0.40"])
    reg = Registry(registry)
    reg.promote(NAME, "1.0.80", "staging")
    data, size = on_disk(registry)
    assert data["archived"] == ["1.0.0..1.0.39", "1.0.42..1.0.59", "1.0.70"]
    assert data["versions"] == {"1.0.41": "deprecated", "1.1.0": "active", "1.0.80": "staging"}
    shown = {row["version"]: row["status"] for row in reg.show(NAME)["versions"]}
    assert [v for v, s in shown.items() if s == "archived"] == sorted(
        statuses.keys() - {"1.0.41", "1.1.0"}, key=lambda v: tuple(map(int, v.split("."))))
    assert shown["1.0.40"] == "registered" and shown["1.0.60"] == "registered"
    assert reg.deployment(NAME)["versions"]["1.0.99"] == "registered"
    # archiving the gap joins the runs
    reg.promote(NAME, "1.0.40", "archived")
    data, _ = on_disk(registry)
    assert data["archived"] == ["1.0.0..1.0.40", "1.0.42..1.0.59", "1.0.70"]
    assert run_cli("check", cwd=registry).returncode == 0


def test_a_write_that_would_exceed_the_read_cap_is_refused_and_writes_nothing(registry, monkeypatch):
    from modelctl import Registry, yamlio
    from modelctl.errors import ValidationError

    versions = [f"1.{i // 100}.{i % 100}" for i in range(300)]  # a file larger than modelctl.yaml
    statuses = {v: "deprecated" for v in versions if v not in ("1.1.0", "1.1.1", "1.1.2")}
    legacy_registry(registry, 300, {**statuses, "1.1.0": "active"}, tagged=["1.1.1", "1.1.2"])
    reg = Registry(registry)
    reg.promote(NAME, "1.1.1", "staging")
    raw = git(registry, "show", f"HEAD:deployments/{NAME}.yaml").encode()
    monkeypatch.setattr(yamlio, "MAX_BYTES", len(raw))  # today's file just fits; one more line does not
    before = repo_state(registry)
    with pytest.raises(ValidationError, match=r"would be \d+ bytes, above the \d+ modelctl reads back; "
                                              r"nothing was written; archive versions"):
        reg.promote(NAME, "1.1.2", "staging")
    assert repo_state(registry) == before


def test_a_deployment_that_would_not_read_back_as_written_is_refused_and_writes_nothing(registry, monkeypatch):
    """A defect in the serializer (here: one that drops the canary) can never reach a commit."""
    from modelctl import Registry, yamlio
    from modelctl.errors import ValidationError

    legacy_registry(registry, 3, {"1.0.0": "active"}, tagged=["1.0.1", "1.0.2"])
    reg = Registry(registry)
    dumps = yamlio.dumps
    monkeypatch.setattr(yamlio, "dumps", lambda data, previous=None: dumps({**data, "canary": None}, previous))
    before = repo_state(registry)
    with pytest.raises(ValidationError, match=rf"deployments/{NAME}.yaml as it would be written does not read back "
                                              r"\(it reads back as a different document\); nothing was written"):
        reg.canary(NAME, "1.0.1", 5, force=True, reason="no stages in this test")
    assert repo_state(registry) == before


def test_a_deployment_a_write_validated_is_not_validated_again_by_the_next_command(registry):
    """The write that loaded jsonschema (to validate the bundle it registers) records the bundle and
    the deployment it wrote as valid, so `show` and `status` right after it never import jsonschema."""
    import subprocess
    import sys

    from modelctl import schema

    legacy_registry(registry, 2, {"1.0.0": "active"})
    assert run_cli("show", NAME, cwd=registry).returncode == 0  # the clone's first show reads every bundle once
    (registry / "new.yaml").write_text(bundle("1.1.0", 0.3))
    assert run_cli("register", "new.yaml", "--allow-multi-change", cwd=registry).returncode == 0
    raw = git(registry, "show", f"HEAD:deployments/{NAME}.yaml").encode()
    known = list((registry / ".git").glob("modelctl-valid-deployment-*"))
    assert len(known) == 1 and schema.blob_id(raw) in known[0].read_text().split()
    probe = ("import sys; from modelctl import Registry; r = Registry(sys.argv[1]); r.show(sys.argv[2]); "
             "r.status(); print('jsonschema' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe, str(registry), NAME], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr
