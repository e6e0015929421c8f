"""rendered/: ConfigMaps with each served model's routing document, in the commit of every write.

Validated with real tools: `kubectl kustomize` (a real kustomize build, offline) and
kubernetes-validate (the Kubernetes JSON schemas, offline); loaded by the real serving client from
a directory laid out as the kubelet mounts a ConfigMap.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml as pyyaml
from conftest import git, new_registry, register_chain, repo_state, run_cli
from lifecyclekit import live_registry

from modelctl import manifests, routing
from modelctl.serving import Router

NAME = "support-agent"
CM = f"rendered/modelctl-{NAME}.yaml"
KUSTOMIZATION = "rendered/kustomization.yaml"
KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed (scripts/test.sh installs it)")


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """support-agent: 1.0.0 active, 1.0.1 canary at 10 %, 1.0.2 shadow at 25 % (template: render on)."""
    return live_registry(tmp_path_factory)


def configmap(text: str) -> tuple[dict, dict]:
    """(the ConfigMap object, the routing document in its one data key)."""
    obj = pyyaml.safe_load(text)
    (key, body), = obj["data"].items()
    assert key == f"{obj['metadata']['labels']['modelctl.dev/model']}.json"
    return obj, json.loads(body)


def commits(repo) -> int:
    return int(git(repo, "rev-list", "--count", "HEAD"))


def changed(repo, rev="HEAD") -> list[str]:
    return git(repo, "show", "--name-only", "--format=", rev).split()


def ok(proc):
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_the_configmap_holds_what_resolve_prints_with_the_prompt_texts(live):
    root = live.root
    assert git(root, "ls-tree", "--name-only", "HEAD", "rendered/").split() == [KUSTOMIZATION, CM]
    obj, doc = configmap(git(root, "show", f"HEAD:{CM}"))
    assert obj["apiVersion"] == "v1" and obj["kind"] == "ConfigMap"
    assert obj["metadata"]["name"] == f"modelctl-{NAME}"
    assert "namespace" not in obj["metadata"]  # render.namespace: null in the template
    assert obj["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "modelctl",
                                         "app.kubernetes.io/part-of": "modelctl", "modelctl.dev/model": NAME}
    resolved = json.loads(ok(run_cli("resolve", NAME, "--json", cwd=root)).stdout)
    assert resolved.pop("commit") == git(root, "rev-parse", "HEAD").strip()
    for role, version, percent in (("active", "1.0.0", 90), ("canary", "1.0.1", 10), ("shadow", "1.0.2", 25)):
        entry = doc[role]
        assert (entry["version"], entry["percent"]) == (version, percent)
        text = (root / entry["prompt"]["template"]).read_text()
        assert entry["prompt"].pop("text") == text
        assert entry["prompt"]["sha256"] == hashlib.sha256(text.encode()).hexdigest()
    assert doc == resolved  # the rest is exactly `resolve --json`: bucket rule, config, percents
    assert doc["assignment"]["canary_when"] == "bucket < round(canary.percent * 100)"
    assert pyyaml.safe_load(git(root, "show", f"HEAD:{KUSTOMIZATION}")) == {
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [f"modelctl-{NAME}.yaml"]}
    # what `render` prints is what the write committed
    assert ok(run_cli("render", cwd=root)).stdout == git(root, "show", f"HEAD:{CM}")
    printed = json.loads(ok(run_cli("render", NAME, "--format", "json", cwd=root)).stdout)
    assert printed == {"schema": "modelctl/v1", "documents": [configmap(git(root, "show", f"HEAD:{CM}"))[1]]}


@needs_kubectl
def test_kustomize_builds_it_and_the_kubernetes_schemas_accept_it(live, tmp_path):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    out = tmp_path / "rendered"
    out.mkdir()
    for path in (CM, KUSTOMIZATION):
        (out / Path(path).name).write_text(git(live.root, "show", f"HEAD:{path}"))
    built = subprocess.run([KUBECTL, "kustomize", str(out)], capture_output=True, text=True, timeout=60)
    assert built.returncode == 0, built.stderr
    objects = list(pyyaml.safe_load_all(built.stdout))
    assert [(o["kind"], o["metadata"]["name"]) for o in objects] == [("ConfigMap", f"modelctl-{NAME}")]
    assert objects[0] == pyyaml.safe_load((out / f"modelctl-{NAME}.yaml").read_text())
    version = kubernetes_validate.latest_version()
    for obj in objects + [pyyaml.safe_load((out / f"modelctl-{NAME}.yaml").read_text())]:
        kubernetes_validate.validate(obj, version, strict=True)
    # the validator does refuse a broken ConfigMap (so the pass above means something)
    broken = dict(objects[0], data={f"{NAME}.json": 42})
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, version, strict=True)


def kubelet_mount(target: Path, data: dict[str, str], stamp: str) -> None:
    """Lay out ConfigMap data as the kubelet does: a timestamped dir, ..data -> it, key -> ..data/key."""
    target.mkdir(exist_ok=True)
    real = target / f"..{stamp}"
    real.mkdir()
    for key, value in data.items():
        (real / key).write_text(value)
    tmp_link = target / "..data_tmp"
    os.symlink(real.name, tmp_link)
    os.replace(tmp_link, target / "..data")
    for key in data:
        if not (target / key).is_symlink():
            os.symlink(f"..data/{key}", target / key)


def test_the_serving_client_loads_the_mounted_configmap_and_picks_as_resolve_says(live, tmp_path):
    obj, doc = configmap(git(live.root, "show", f"HEAD:{CM}"))
    mount = tmp_path / "mount"
    kubelet_mount(mount, obj["data"], "2026_12_01_00_00_00.1")
    router = Router.from_directory(mount)
    dep = live.deployment(NAME)
    canary = 0
    for i in range(3000):
        key = f"user-{i}"
        pick = router.pick(NAME, key)
        assert pick.version == routing.assign(dep, key)
        assert pick.bundle.prompt["text"] == doc[pick.role]["prompt"]["text"]
        canary += pick.role == "canary"
    assert 200 < canary < 400  # 10 % of 3000
    for key in ("user-42", "user-43"):  # and the CLI's own answer
        assert router.pick(NAME, key).version == ok(run_cli("resolve", NAME, "--key", key, cwd=live.root)).stdout.strip()


def lifecycle(repo):
    """(command, served state changes?) through every write, on a fresh registry."""
    return [
        (("promote", NAME, "1.0.0", "--to", "staging"), False),
        (("promote", NAME, "1.0.0", "--to", "active"), True),
        (("promote", NAME, "1.0.1", "--to", "staging"), False),
        (("shadow", NAME, "1.0.1", "--pct", "25"), True),
        (("canary", NAME, "1.0.1", "--pct", "5"), True),
        (("canary", NAME, "1.0.1", "--pct", "10"), True),
        (("promote", NAME, "1.0.2", "--to", "staging"), False),
        (("shadow", NAME, "1.0.2", "--pct", "25"), True),
        (("rollback", NAME, "--reason", "errors"), True),
        (("promote", NAME, "1.0.2", "--to", "canary", "--force", "--reason", "skip"), True),
        (("promote", NAME, "1.0.2", "--to", "active", "--force", "--reason", "skip"), True),
        (("rollback", NAME, "--from", "1.0.2"), True),
    ]


def test_every_write_is_one_commit_that_carries_the_rendered_files_it_changes(tmp_path):
    repo = new_registry(tmp_path / "reg")
    drafts = tmp_path / "drafts"
    drafts.mkdir()
    from modelctl import Registry

    before = commits(repo)
    register_chain(Registry(repo), drafts, count=3)
    assert commits(repo) == before + 3
    assert not any(p.startswith("rendered/modelctl-") for p in git(repo, "ls-tree", "-r", "--name-only", "HEAD").split())
    for args, serves_change in lifecycle(repo):
        before = commits(repo)
        ok(run_cli(*args, cwd=repo))
        assert commits(repo) == before + 1, args
        files = changed(repo)
        assert "deployments/support-agent.yaml" in files, args
        assert (CM in files) == serves_change, (args, files)
        # the committed rendering is exactly what the registry at that commit renders
        committed = git(repo, "show", f"HEAD:{CM}") if CM in git(repo, "ls-tree", "-r", "--name-only", "HEAD") else ""
        assert ok(run_cli("render", cwd=repo)).stdout == committed, args
    ok(run_cli("check", cwd=repo))
    _, doc = configmap(git(repo, "show", f"HEAD:{CM}"))
    assert doc["active"]["version"] == "1.0.0" and doc["canary"] is None  # 1.0.2 taken out again
    # a re-run is already done: no commit, the rendering untouched
    head = git(repo, "rev-parse", "HEAD")
    ok(run_cli("rollback", NAME, "--from", "1.0.2", cwd=repo))
    assert git(repo, "rev-parse", "HEAD") == head


def test_check_fails_on_a_hand_edit_until_render_write(live, tmp_path):
    repo = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(live.root), str(repo)], check=True)
    text = (repo / CM).read_text()
    (repo / CM).write_text(text.replace('"percent": 10,', '"percent": 50,'))
    git(repo, "commit", "-qam", "hand edit")
    proc = run_cli("check", cwd=repo)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert CM in proc.stdout
    assert "canary.percent is 50 here, 10 in the registry" in proc.stdout
    assert "modelctl render --write" in proc.stdout
    before = commits(repo)
    out = ok(run_cli("render", "--write", cwd=repo))
    assert "rendered: commit" in out.stdout
    assert commits(repo) == before + 1 and changed(repo) == [CM]
    assert "Modelctl-Action: render" in git(repo, "log", "-1", "--format=%B")
    assert (repo / CM).read_text() == text
    ok(run_cli("check", cwd=repo))
    # up to date: nothing to write
    out = ok(run_cli("render", "--write", cwd=repo))
    assert "already done" in out.stdout and commits(repo) == before + 1


def test_check_fails_when_a_deployment_is_edited_without_rendering(live, tmp_path):
    repo = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(live.root), str(repo)], check=True)
    dep = repo / "deployments" / f"{NAME}.yaml"
    dep.write_text(dep.read_text().replace("percent: 10", "percent: 5"))
    git(repo, "commit", "-qam", "hand edit of the deployment")
    proc = run_cli("check", "--json", cwd=repo)
    assert proc.returncode == 1
    found = [f for f in json.loads(proc.stdout)["findings"] if f["path"] == CM]
    assert len(found) == 1 and "canary.percent is 10 here, 5 in the registry" in found[0]["message"]
    ok(run_cli("render", NAME, "--write", cwd=repo))
    assert changed(repo) == [CM]
    ok(run_cli("check", cwd=repo))
    # a stray rendered file (no such model) and a deleted one are findings too
    (repo / "rendered" / "modelctl-ghost.yaml").write_text("kind: ConfigMap\n")
    git(repo, "rm", "-q", CM)
    git(repo, "add", "rendered")
    git(repo, "commit", "-qm", "more hand edits")
    out = json.loads(run_cli("check", "--json", cwd=repo).stdout)["findings"]
    messages = {f["path"]: f["message"] for f in out}
    assert messages[CM].startswith("missing: the registry renders this file; run 'modelctl render --write'")
    assert messages["rendered/modelctl-ghost.yaml"].startswith(
        "no served model explains this rendered file (no active version in deployments/ghost.yaml)")
    ok(run_cli("render", "--write", cwd=repo))
    assert sorted(changed(repo)) == ["rendered/modelctl-ghost.yaml", CM]
    assert not (repo / "rendered" / "modelctl-ghost.yaml").exists()
    ok(run_cli("check", cwd=repo))


@pytest.mark.parametrize("args, message", [
    (("render", "no-such-model"), "no model named 'no-such-model'"),
    (("render", "no-such-model", "--write"), "no model named 'no-such-model'"),
    (("render", "--format", "helm"), "unknown --format 'helm'"),
    (("render", "--format", "json", "--write"), "--write writes the configmap rendering only"),
    (("render", "Not_A_Name"), "Not_A_Name"),
    (("render", "--push"), "--push and --branch go with --write"),
])
def test_bad_input_exits_2_and_writes_nothing(live, tmp_path, args, message):
    repo = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(live.root), str(repo)], check=True)
    (repo / CM).write_text("hand edit\n")  # render --write would have something to do
    git(repo, "commit", "-qam", "hand edit")
    state = repo_state(repo)
    proc = run_cli(*args, cwd=repo)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.startswith("error: ") and message in proc.stderr
    assert repo_state(repo) == state


def test_litellm_format_prints_the_router_config_of_the_served_versions(live):
    from modelctl.integrations.litellm import router_config

    proc = ok(run_cli("render", "--format", "litellm", cwd=live.root))
    config = json.loads(proc.stdout)
    docs = json.loads(ok(run_cli("render", "--format", "json", cwd=live.root)).stdout)["documents"]
    assert config == json.loads(json.dumps(router_config(docs)))
    ids = {d["model_info"]["id"] for d in config["model_list"]}
    for doc in docs:
        for role in ("active", "canary"):
            if doc[role]:
                assert f"{doc['name']}@{doc[role]['version']}" in ids


def test_rendering_is_deterministic(live, tmp_path):
    first = run_cli("render", cwd=live.root).stdout
    assert first == run_cli("render", cwd=live.root).stdout
    assert run_cli("render", "--format", "json", cwd=live.root).stdout == \
        run_cli("render", "--format", "json", cwd=live.root).stdout
    # the pure renderer: same input, same bytes, whatever the order the input came in
    dep = live.deployment(NAME)
    bundles = {(NAME, v): live.bundle(NAME, v) for v in ("1.0.0", "1.0.1", "1.0.2")}
    prompts = {p: (live.root / p).read_bytes() for p in ("prompts/p1.txt", "prompts/p2.txt")}
    settings = manifests.Settings(True, "rendered", "ml-serving")
    one = manifests.render_all({NAME: dep}, bundles, prompts, settings)
    two = manifests.render_all({NAME: dict(reversed(list(dep.items())))}, dict(reversed(list(bundles.items()))),
                               dict(reversed(list(prompts.items()))), settings)
    assert one == two
    assert pyyaml.safe_load(one[CM])["metadata"]["namespace"] == "ml-serving"
    assert configmap(one[CM].decode())[1] == configmap(git(live.root, "show", f"HEAD:{CM}"))[1]


def test_rendering_is_off_for_a_registry_without_the_section(tmp_path):
    repo = new_registry(tmp_path / "reg")
    config = repo / "modelctl.yaml"
    config.write_text(config.read_text().replace("  enabled: true\n", "  enabled: false\n"))
    git(repo, "rm", "-rq", "rendered")
    git(repo, "commit", "-qam", "render off")
    from modelctl import Registry

    drafts = tmp_path / "drafts"
    drafts.mkdir()
    register_chain(Registry(repo), drafts, count=1)
    ok(run_cli("promote", NAME, "1.0.0", "--to", "staging", cwd=repo))
    ok(run_cli("promote", NAME, "1.0.0", "--to", "active", cwd=repo))
    assert changed(repo) == ["deployments/support-agent.yaml"]
    ok(run_cli("check", cwd=repo))
    proc = run_cli("render", "--write", cwd=repo)
    assert proc.returncode == 2 and "render.enabled: true" in proc.stderr
    assert pyyaml.safe_load(ok(run_cli("render", cwd=repo)).stdout)["kind"] == "ConfigMap"  # printing still works


def test_names_are_dns_labels_and_cannot_collide_with_the_kustomization():
    settings = manifests.Settings(True)
    assert settings.path("kustomization") == "rendered/modelctl-kustomization.yaml"
    assert settings.model_of("rendered/kustomization.yaml") is None
    assert settings.model_of("rendered/modelctl-kustomization.yaml") == "kustomization"
    assert manifests.configmap_name("a" * 63) == "modelctl-" + "a" * 63
    with pytest.raises(Exception, match="not a model name"):
        manifests.configmap_name("Bad_Name")


def test_check_names_what_differs_in_words():
    settings = manifests.Settings(True)
    served = {"name": "a", "active": {"percent": 95}, "canary": {"version": "1.0.1", "percent": 5}}
    before = {"name": "a", "active": {"percent": 100}, "canary": None}
    line, what = manifests.difference(manifests.configmap("a", before, settings),
                                      manifests.configmap("a", served, settings))
    assert what == ('routing document: active.percent is 100 here, 95 in the registry; canary is null here, '
                    '{"percent": 5, "version": "1.0.1"} in the registry')
    assert line is not None and line > 1
    line, what = manifests.difference(b"kind: Secret\n", manifests.configmap("a", served, settings))
    assert line == 1 and what.startswith('line 1 is "kind: Secret" here, "# Rendered by modelctl')
