"""The ready-made CI: the shipped GitHub Actions workflow's own scripts, run against a temporary registry
with a real (bare) remote, as the pull-request and main-branch jobs would run them; and what ships."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, git, run_cli
from evalkit import bundle_file, configure, promote, register, write_report
from gitremote import bare_remote, clone

WORKFLOW = ROOT / "registry-template" / ".github" / "workflows" / "modelctl.yml"
KEY = "sk-proj-Ab3dEf9hIjKlMnOpQrStUvWxYz0123456789abcd"
WORSE = {"accuracy": (0.90, 1200), "hallucination_rate": (0.011, 1200), "latency_p95_ms": (870, None)}


def step(job: str, name: str) -> dict:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    return next(s for s in workflow["jobs"][job]["steps"] if s.get("name") == name)


@pytest.fixture
def tools(tmp_path) -> dict:
    """PATH with `modelctl` and `python` as a runner would have them after the install step."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "modelctl"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m modelctl "$@"\n')
    shim.chmod(0o755)
    (bin_dir / "python").symlink_to(sys.executable)
    env = dict(os.environ)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_step(job: str, name: str, cwd: Path, env: dict, **extra) -> subprocess.CompletedProcess:
    """A step's `run:` script the way Actions runs it on Linux (bash -e, -o pipefail)."""
    s = step(job, name)
    full = {**env, **{k: str(v) for k, v in (s.get("env") or {}).items() if "${{" not in str(v)}, **extra}
    return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", s["run"]], cwd=cwd, env=full,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def shared(registry, tmp_path):
    """A registry on a bare remote: 1.0.0 active on main."""
    configure(registry, pipeline=[])
    register(registry, tmp_path, "1.0.0")
    promote(registry, "1.0.0")
    url = bare_remote(registry, tmp_path / "remote.git")
    return registry, url


def pull_request(url: str, branch: str, where: Path) -> Path:
    """The checkout a pull-request job gets: full history, the head of the branch, origin/main present."""
    ci = clone(url, where)
    git(ci, "checkout", "-q", "--detach", f"origin/{branch}")
    return ci


def test_the_template_ships_the_workflow_and_codeowners(registry):
    # modelctl init lays them out in every new registry
    assert (registry / ".github/workflows/modelctl.yml").read_text() == WORKFLOW.read_text()
    owners = (registry / "CODEOWNERS").read_text()
    assert re.search(r"^/deployments/ @", owners, re.M)
    workflow = yaml.safe_load(WORKFLOW.read_text())
    runs = "\n".join(s.get("run", "") for job in workflow["jobs"].values() for s in job["steps"])
    assert 'modelctl check --changed-since "origin/$BASE" --format github' in runs
    assert "modelctl gate" in runs and "modelctl doctor --fix --push" in runs
    # user text reaches the scripts through env, never pasted into them by the expression engine
    assert "${{" not in runs


def test_pull_request_job_passes_a_good_bundle_and_main_job_tags_the_merge(shared, tmp_path, tools):
    registry, url = shared
    better = {"accuracy": (0.95, 1200), "hallucination_rate": (0.010, 1200), "latency_p95_ms": (860, None)}
    write_report(registry, "1.1.0", **better)
    proc = run_cli("register", bundle_file(tmp_path, "1.1.0", "1.0.0", temperature=0.31, fallbacks=True),
                   "--push", "--branch", "add-1.1.0", cwd=registry)
    assert proc.returncode == 0, proc.stderr
    ci = pull_request(url, "add-1.1.0", tmp_path / "pr")
    summary = tmp_path / "summary.md"
    check = run_step("pull-request", "modelctl check", ci, tools, BASE="main")
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.splitlines()[-1].startswith("modelctl check: 0 error(s), 0 warning(s)"), check.stdout
    gate = run_step("pull-request", "modelctl gate", ci, tools, BASE="main", GITHUB_STEP_SUMMARY=summary)
    assert gate.returncode == 0, gate.stdout + gate.stderr
    assert "### ✅ Eval gate passed: support-agent 1.1.0" in (ci / "gate.md").read_text()
    assert "Compared with support-agent 1.0.0" in summary.read_text()

    # merged: the main job's doctor --fix --push makes the registration tag the branch could not
    git(ci, "checkout", "-q", "main")
    git(ci, "merge", "-q", "--no-ff", "origin/add-1.1.0", "-m", "Merge pull request #1")
    git(ci, "push", "-q", "origin", "main")
    main = clone(url, tmp_path / "main-job")
    assert "support-agent@v1.1.0" not in git(main, "ls-remote", "--tags", "origin")
    env = {**tools, "HOME": str(tmp_path / "runner-home")}
    (tmp_path / "runner-home").mkdir()
    for key in ("GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL"):
        env.pop(key, None)  # the step sets its own identity, as a runner has none
    doctor = run_step("main", "modelctl doctor --fix", main, env)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    tags = git(main, "ls-remote", "--tags", "origin")
    assert "refs/tags/support-agent@v1.1.0" in tags
    tagger = git(main, "for-each-ref", "--format=%(taggername)", "refs/tags/support-agent@v1.1.0").strip()
    assert tagger == "github-actions[bot]"
    # a second run has nothing left to do
    assert run_step("main", "modelctl doctor --fix", main, env).returncode == 0


def test_pull_request_job_fails_a_worse_bundle_and_a_committed_secret(shared, tmp_path, tools):
    registry, url = shared
    write_report(registry, "1.1.0", **WORSE)
    (registry / "providers.yaml").write_text(f"openai:\n  api_key: {KEY}\n")
    git(registry, "checkout", "-q", "-b", "bad")
    git(registry, "add", "providers.yaml")
    git(registry, "commit", "-q", "-m", "provider settings")
    proc = run_cli("register", bundle_file(tmp_path, "1.1.0", "1.0.0", temperature=0.31), cwd=registry)
    assert proc.returncode == 0, proc.stderr
    # a bundle without an eval report is registered too: not gated, and no reason to fail
    proc = run_cli("register", bundle_file(tmp_path, "1.2.0", "1.1.0", temperature=0.32, report=False),
                   cwd=registry)
    assert proc.returncode == 0, proc.stderr
    git(registry, "push", "-q", "origin", "bad")
    ci = pull_request(url, "bad", tmp_path / "pr")
    check = run_step("pull-request", "modelctl check", ci, tools, BASE="main")
    assert check.returncode == 1
    errors = [line for line in check.stdout.splitlines() if line.startswith("::error ")]
    assert errors == [errors[0]] and errors[0].startswith("::error file=providers.yaml,line=2,title=modelctl check::")
    assert KEY not in check.stdout and KEY[10:30] not in check.stdout
    summary = tmp_path / "summary.md"
    gate = run_step("pull-request", "modelctl gate", ci, tools, BASE="main", GITHUB_STEP_SUMMARY=summary)
    assert gate.returncode == 1
    text = (ci / "gate.md").read_text()
    assert "### ❌ Eval gate failed: support-agent 1.1.0" in text
    assert "**support-agent 1.2.0**: no eval report in the bundle; not gated." in text
    assert summary.read_text() == text


PIN = ".github/modelctl-requirements.txt"


def test_ci_installs_the_modelctl_init_ran_with_from_one_pinned_place(registry):
    import modelctl

    workflow = yaml.safe_load(WORKFLOW.read_text())
    installs = [s for job in workflow["jobs"].values() for s in job["steps"] if "pip install" in s.get("run", "")]
    assert len(installs) == 2  # the pull-request job and the main job
    for s in installs:
        # never a bare package name: the name is not published, whoever claims it would run with write access
        assert re.findall(r"pip install .*", s["run"]) == [f"pip install -r {PIN}"], s["run"]
    lines = [line for line in (registry / PIN).read_text().splitlines() if line and not line.startswith("#")]
    assert lines == [f"modelctl @ git+https://modelctl-source.invalid/modelctl@v{modelctl.__version__}"]
    assert git(registry, "ls-files", PIN).strip() == PIN  # committed by init


def test_the_install_step_refuses_until_the_source_is_set(registry, tmp_path, tools):
    bin_dir = Path(tools["PATH"].split(os.pathsep)[0])
    calls = tmp_path / "pip-calls"
    (bin_dir / "pip").write_text(f'#!/bin/sh\necho "$@" >> "{calls}"\n')
    (bin_dir / "pip").chmod(0o755)
    for job in ("pull-request", "main"):
        proc = run_step(job, "Install modelctl", registry, tools)
        assert proc.returncode == 1 and not calls.exists()
        assert proc.stdout.startswith(f"::error file={PIN}::set the source modelctl is installed from")
    pin = registry / PIN
    pin.write_text(pin.read_text().replace("modelctl-source.invalid", "git.example.com/platform"))
    for job in ("pull-request", "main"):
        proc = run_step(job, "Install modelctl", registry, tools)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    assert calls.read_text().splitlines() == [f"install -r {PIN}"] * 2


def test_the_wheel_ships_the_ci_templates(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist),
                    str(ROOT)], check=True, capture_output=True)
    wheel = zipfile.ZipFile(next(dist.glob("modelctl-*.whl")))
    names = wheel.namelist()
    data = "modelctl/data/registry-template/"
    assert wheel.read(data + ".github/workflows/modelctl.yml") == WORKFLOW.read_bytes()
    assert wheel.read(data + "CODEOWNERS") == (ROOT / "registry-template" / "CODEOWNERS").read_bytes()
    assert wheel.read(data + PIN) == (ROOT / "registry-template" / PIN).read_bytes()
    assert data + "modelctl.yaml" in names


def test_pre_commit_hook_runs_check(registry):
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    [hook] = [h for h in hooks if h["id"] == "modelctl-check"]
    assert hook["pass_filenames"] is False and hook["language"] == "python"
    files = re.compile(hook["files"])
    for path in ("modelctl.yaml", "bundles/a/1.0.0.yaml", "deployments/a.yaml", "evals/a/1.0.0.json",
                 "prompts/a.txt", "deprecations.yaml"):
        assert files.search(path), path
    assert not files.search("README.md")
    entry = hook["entry"].split()
    assert entry[0] == "modelctl"
    assert run_cli(*entry[1:], cwd=registry).returncode == 0
    # the hook runs before the commit exists: what is staged must be judged, not HEAD
    (registry / "deployments" / "broken.yaml").write_text("apiVersion: modelctl/v1\nkind: Deployment\n")
    git(registry, "add", "deployments/broken.yaml")
    staged = run_cli(*entry[1:], cwd=registry)
    assert staged.returncode == 1 and "deployments/broken.yaml" in staged.stdout
    assert run_cli("check", cwd=registry).returncode == 0  # HEAD itself is still fine
    git(registry, "rm", "-q", "--cached", "deployments/broken.yaml")
    (registry / "evals" / "leak.yaml").write_text("key: sk-proj-aB3dE5fG7hJ9kL1mN2pQ4rS6tU8vW0xY2zA4bC6d\n")
    git(registry, "add", "evals/leak.yaml")
    leak = run_cli(*entry[1:], cwd=registry)
    assert leak.returncode == 1 and "evals/leak.yaml" in leak.stdout and "aB3dE5fG7h" not in leak.stdout
