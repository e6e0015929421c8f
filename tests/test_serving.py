"""modelctl.serving: picks agree with `resolve --key`, ConfigMap swaps reload atomically, bad files never serve."""
from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections import Counter

import pytest
from conftest import ROOT, bundle_text, git, run_cli
from lifecyclekit import isolated_env, live_registry

import modelctl
from modelctl import routing, serving
from modelctl.errors import ModelctlError

NAME = "support-agent"
OTHER = "search-ranker"


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """support-agent: 1.0.0 active, 1.0.1 canary at 10 %, 1.0.2 shadow at 25 %; search-ranker: registered only."""
    reg = live_registry(tmp_path_factory, NAME)
    base = reg.root.parent
    with isolated_env(tmp_path_factory):
        other = base / "ranker.yaml"
        other.write_text(bundle_text(name=OTHER, version="1.0.0"))
        reg.register(other)
    return reg.root


def entry(version, percent, model_id="gpt-4.1-mini-2025-04-14", provider="openai", **extra):
    """A resolved bundle as a routing document carries it."""
    return {"version": version, "percent": percent, "model": {"provider": provider, "id": model_id},
            "prompt": {"template": "prompts/p1.txt", "sha256": "ab" * 32},
            "config": {"temperature": 0.3, "max_tokens": 1024}, **extra}


def document(name=NAME, active="1.0.0", canary=None, shadow=None):
    """A routing document in the shape `modelctl resolve NAME --json` prints."""
    canary_pct = canary[1] if canary else 0
    return {"schema": "modelctl/v1", "name": name,
            "active": entry(active, 100 - canary_pct) if active else None,
            "canary": entry(canary[0], canary[1], model_id="gpt-4.1-2025-04-14") if canary else None,
            "shadow": entry(shadow[0], shadow[1], provider="anthropic", model_id="claude-sonnet-4-5-20250929")
            if shadow else None,
            "assignment": {"hash": "sha256", "input": "utf8(name + '\\0' + key)",
                           "bucket": "uint64_be(digest[0:8]) % 10000", "buckets": 10000,
                           "canary_when": "bucket < round(canary.percent * 100)"}}


def write_json(path, doc) -> None:
    """Write the whole file beside it and rename it in (a new inode, as a careful writer does)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)


class ConfigMapDir:
    """A mounted ConfigMap as the kubelet lays it out: NAME -> ..data/NAME, ..data -> ..<generation>/."""

    def __init__(self, root):
        self.root = root
        root.mkdir()
        self.generation = 0
        self.current = None

    def publish(self, docs: dict[str, dict]) -> None:
        """Write a new timestamped directory, swap ..data to it atomically, remove the old one."""
        self.generation += 1
        data = f"..2026_12_01_00_00_00.{self.generation:06d}"
        (self.root / data).mkdir()
        for filename, doc in docs.items():
            (self.root / data / filename).write_text(json.dumps(doc))
        os.symlink(data, self.root / "..data_tmp")
        os.replace(self.root / "..data_tmp", self.root / "..data")
        for filename in docs:
            if not (self.root / filename).is_symlink():
                os.symlink(f"..data/{filename}", self.root / filename)
        if self.current:
            shutil.rmtree(self.root / self.current)
        self.current = data


# -- the git source agrees with resolve ---------------------------------------------------------

def test_registry_source_agrees_with_resolve_for_every_key(live):
    router = serving.Router.from_registry(live)
    head = git(live, "rev-parse", "HEAD").strip()
    assert router.snapshot.commit == head and router.snapshot.models() == [OTHER, NAME]
    reg = modelctl.Registry(live)
    roles = set()
    for i in range(300):
        key = f"user-{i}"
        expected = reg.resolve(NAME, key=key)["key"]
        pick = router.pick(NAME, key)
        assert (pick.bucket, pick.version, pick.role) == (expected["bucket"], expected["version"], expected["role"])
        roles.add(pick.role)
    assert roles == {"active", "canary"}
    doc = reg.resolve(NAME)
    pick = router.pick(NAME, "user-42")
    assert pick.bundle.as_dict() == doc["active"] and pick.commit == head


def test_registry_source_agrees_with_the_cli(live):
    router = serving.Router.from_registry(live)
    canary_key = next(f"k{i}" for i in range(1000) if routing.bucket(NAME, f"k{i}") < 1000)
    for key in ("user-42", canary_key, "ünïcode-ключ-鍵"):
        proc = run_cli("resolve", NAME, "--key", key, "--json", cwd=live)
        assert proc.returncode == 0, proc.stderr
        doc = json.loads(proc.stdout)
        pick = router.pick(NAME, key)
        assert doc["key"] == {"key": key, "bucket": pick.bucket, "version": pick.version, "role": pick.role}
        served = doc["canary"] if pick.role == "canary" else doc["active"]
        assert pick.bundle.as_dict() == served and pick.commit == doc["commit"]


def test_registry_source_reads_an_older_ref(live):
    # HEAD~2: before the shadow moved to 1.0.2 and before search-ranker was registered
    router = serving.Router.from_registry(live, ref="HEAD~2")
    assert router.snapshot.commit == git(live, "rev-parse", "HEAD~2").strip()
    assert router.snapshot.models() == [NAME]
    bundles = router.snapshot.bundles(NAME)
    expected = modelctl.Registry(live).resolve(NAME, ref="HEAD~2")
    assert [b and b.version for b in bundles.values()] == [
        (expected[r] or {}).get("version") for r in ("active", "canary", "shadow")]


def test_a_model_with_no_active_version_and_an_unknown_model(live):
    router = serving.Router.from_registry(live)
    with pytest.raises(serving.NoActiveVersion, match="search-ranker has no active version"):
        router.pick(OTHER, "user-42")
    with pytest.raises(serving.UnknownModel, match="no routing document for model 'nope'") as err:
        router.pick("nope", "user-42")
    assert isinstance(err.value, ModelctlError) and err.value.exit_code == 2
    assert not issubclass(serving.NoActiveVersion, serving.UnknownModel)


def test_span_attributes_name_the_registry_entry(live):
    router = serving.Router.from_registry(live)
    doc = modelctl.Registry(live).resolve(NAME)
    key = next(f"k{i}" for i in range(1000) if routing.bucket(NAME, f"k{i}") < 1000)
    attrs = router.pick(NAME, key).attributes()
    served = doc["canary"]
    canonical = json.dumps({"model": served["model"], "prompt": served["prompt"], "config": served["config"],
                            "fallbacks": []}, sort_keys=True, separators=(",", ":"))
    assert attrs == {
        "gen_ai.provider.name": "openai", "gen_ai.system": "openai",
        "gen_ai.request.model": "gpt-4.1-mini-2025-04-14",
        "gen_ai.request.temperature": 0.3, "gen_ai.request.max_tokens": 1024,
        "modelctl.model": NAME, "modelctl.version": "1.0.1", "modelctl.role": "canary",
        "modelctl.bucket": routing.bucket(NAME, key),
        "modelctl.bundle.sha256": hashlib.sha256(canonical.encode()).hexdigest(),
        "modelctl.prompt.sha256": served["prompt"]["sha256"],
        "modelctl.registry.commit": doc["commit"],
        "modelctl.shadow.mirrored": attrs["modelctl.shadow.mirrored"],
    }
    assert all(isinstance(v, (str, bool, int, float)) for v in attrs.values())  # OTel attribute value types


# -- the bucket rule and the shadow mirror ------------------------------------------------------

@pytest.mark.parametrize("name,key,bucket", routing.TEST_VECTORS)
def test_test_vectors_at_the_canary_boundary(tmp_path, name, key, bucket):
    path = tmp_path / "doc.json"
    # at percent bucket/100 the key is the first one outside the canary; one bucket more takes it in
    for percent, role in ((bucket / 100, "active"), ((bucket + 1) / 100, "canary")):
        write_json(path, document(name=name, canary=("2.0.0", percent)))
        pick = serving.Router.from_file(path).pick(name, key)
        assert (pick.bucket, pick.role) == (bucket, role)
        assert pick.version == ("2.0.0" if role == "canary" else "1.0.0")


def test_shadow_mirror_is_per_key_independent_of_the_canary_and_never_serves(tmp_path):
    path = tmp_path / "doc.json"
    write_json(path, document(canary=("1.1.0", 10), shadow=("2.0.0", 25)))
    with_shadow = serving.Router.from_file(path)
    write_json(path, document(canary=("1.1.0", 10)))
    without = serving.Router.from_file(path)
    keys = [f"user-{i}" for i in range(10_000)]
    picks = [with_shadow.pick(NAME, k) for k in keys]
    for key, pick in zip(keys, picks):
        assert pick.mirror == (serving.shadow_bucket(NAME, key) < 2500)
        assert pick.shadow is (None if not pick.mirror else with_shadow.snapshot.bundles(NAME)["shadow"])
        assert pick.version == without.pick(NAME, key).version  # the shadow never changes what serves
        assert without.pick(NAME, key).mirror is False
    mirrored = sum(p.mirror for p in picks)
    canary_mirrored = sum(p.mirror for p in picks if p.role == "canary")
    canaries = sum(p.role == "canary" for p in picks)
    assert 2300 < mirrored < 2700
    # with the routing bucket the canary's keys would all be mirrored; an independent hash mirrors ~25 % of them
    assert 0.18 < canary_mirrored / canaries < 0.32
    # raising the shadow's share only adds keys
    write_json(path, document(canary=("1.1.0", 10), shadow=("2.0.0", 50)))
    wider = serving.Router.from_file(path)
    assert all(wider.pick(NAME, k).mirror for k, p in zip(keys, picks) if p.mirror)


# -- sources: file, directory, ConfigMap swap --------------------------------------------------

def test_configmap_swap_reloads_once_and_ignores_dotfiles(tmp_path):
    cm = ConfigMapDir(tmp_path / "routing")
    cm.publish({f"{NAME}.json": document(), f"{OTHER}.json": document(name=OTHER)})
    (cm.root / ".editor.swp").write_text("{not json")
    router = serving.Router.from_directory(cm.root)
    assert router.snapshot.models() == [OTHER, NAME]
    assert router.pick(NAME, "user-42").version == "1.0.0"
    assert router.maybe_reload() is False and router.reloads == 0
    old = router.snapshot
    cm.publish({f"{NAME}.json": document(active="1.0.1"), f"{OTHER}.json": document(name=OTHER)})
    assert router.maybe_reload() is True and router.reloads == 1
    assert router.pick(NAME, "user-42").version == "1.0.1"
    assert old.pick(NAME, "user-42").version == "1.0.0"  # a held snapshot never changes
    assert router.snapshot.bundles(OTHER) == old.bundles(OTHER)  # unchanged bytes: the same bundles
    assert router.maybe_reload() is False and router.reloads == 1


def test_plain_directory_skips_dotfiles_and_subdirectories(tmp_path):
    root = tmp_path / "docs"
    (root / "sub").mkdir(parents=True)
    write_json(root / f"{NAME}.json", document())
    write_json(root / f"{OTHER}.json", document(name=OTHER, canary=("1.1.0", 5)))
    (root / ".hidden").write_text("garbage")
    (root / "sub" / "x.json").write_text("garbage")
    router = serving.Router.from_directory(root)
    assert router.snapshot.models() == [OTHER, NAME]
    write_json(root / f"{OTHER}.json", document(name=OTHER, active="2.0.0"))
    assert router.maybe_reload() is True
    assert router.pick(OTHER, "user-42").version == "2.0.0"


def test_truncated_file_keeps_the_previous_snapshot(tmp_path):
    path = tmp_path / "doc.json"
    write_json(path, document(canary=("1.1.0", 50)))
    router = serving.Router.from_file(path)
    before = [router.pick(NAME, f"u{i}").version for i in range(50)]
    full = json.dumps(document(active="3.0.0"))
    with open(path, "w") as f:  # a writer caught half-way
        f.write(full[: len(full) // 2])
    assert router.maybe_reload() is False
    assert isinstance(router.error, serving.InvalidRoutingDocument) and "not valid JSON" in str(router.error)
    assert [router.pick(NAME, f"u{i}").version for i in range(50)] == before
    error = router.error
    assert router.maybe_reload() is False and router.error is error  # the same bad file is not parsed again
    with pytest.raises(serving.InvalidRoutingDocument, match="doc.json: not valid JSON"):
        router.reload()
    with open(path, "w") as f:
        f.write(full)
    assert router.maybe_reload() is True and router.error is None
    assert router.pick(NAME, "u1").version == "3.0.0"


def test_a_document_that_fails_validation_keeps_the_previous_snapshot(tmp_path):
    path = tmp_path / "doc.json"
    write_json(path, document())
    router = serving.Router.from_file(path)
    bad = document(canary=("1.1.0", 10))
    bad["canary"]["percent"] = 150
    write_json(path, bad)
    assert router.maybe_reload() is False and "canary.percent must be a number in (0, 100]" in str(router.error)
    assert router.pick(NAME, "user-42").version == "1.0.0"


def _broken(change):
    doc = document(canary=("1.1.0", 10), shadow=("2.0.0", 25))
    change(doc)
    return doc


@pytest.mark.parametrize("doc,message", [
    (_broken(lambda d: d.update(schema="modelctl/v2")), "schema must be 'modelctl/v1'"),
    (_broken(lambda d: d.update(name="Support_Agent")), "name must be a model name"),
    (_broken(lambda d: d["canary"].update(percent=0)), "canary.percent must be a number in (0, 100]"),
    (_broken(lambda d: d["shadow"].update(percent=100.5)), "shadow.percent must be a number in (0, 100]"),
    (_broken(lambda d: d["active"].update(percent=True)), "active.percent must be a number in [0, 100]"),
    (_broken(lambda d: d["canary"].update(version=None)), "canary.version must be a non-empty string"),
    (_broken(lambda d: d["active"]["model"].pop("id")), "active.model must name a provider and an id"),
    (_broken(lambda d: d["active"].update(fallbacks="gpt-4o")), "active.fallbacks must be a list of objects"),
    (_broken(lambda d: d.update(active=None)), "a canary or shadow needs an active version"),
    (_broken(lambda d: d["assignment"].update(buckets=1000)), "assignment.buckets is 1000"),
    ([document()], "a routing document is a JSON object"),
])
def test_invalid_documents_are_refused_with_the_file_named(tmp_path, doc, message):
    path = tmp_path / "doc.json"
    write_json(path, doc)
    with pytest.raises(serving.InvalidRoutingDocument) as err:
        serving.Router.from_file(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)


def test_two_files_for_one_model_and_a_missing_file_are_refused(tmp_path):
    root = tmp_path / "docs"
    root.mkdir()
    write_json(root / "a.json", document())
    write_json(root / "b.json", document())
    with pytest.raises(serving.InvalidRoutingDocument, match="model support-agent is also defined in"):
        serving.Router.from_directory(root)
    with pytest.raises(serving.InvalidRoutingDocument, match="cannot be read"):
        serving.Router.from_file(tmp_path / "missing.json")
    with pytest.raises(serving.InvalidRoutingDocument, match="vanished while it was read"):
        serving.Router.from_directory(tmp_path / "missing")


def test_inline_prompt_text_is_served_and_leaves_the_digest_alone(tmp_path):
    plain = document()
    inline = copy.deepcopy(plain)
    inline["active"]["prompt"]["text"] = "You are helpful.\n"
    write_json(tmp_path / "a.json", plain)
    write_json(tmp_path / "b.json", inline)
    a = serving.Router.from_file(tmp_path / "a.json").pick(NAME, "k")
    b = serving.Router.from_file(tmp_path / "b.json").pick(NAME, "k")
    assert b.bundle.prompt["text"] == "You are helpful.\n" and "text" not in a.bundle.prompt
    assert a.bundle.sha256 == b.bundle.sha256 == serving.digest(plain["active"])


def test_bundles_are_read_only_and_copies_are_plain(tmp_path):
    doc = document()
    doc["active"]["fallbacks"] = [{"provider": "anthropic", "id": "claude-sonnet-4-5-20250929"}]
    write_json(tmp_path / "a.json", doc)
    pick = serving.Router.from_file(tmp_path / "a.json").pick(NAME, "k")
    with pytest.raises(TypeError):
        pick.bundle.config["temperature"] = 2.0  # shared by every thread: read-only
    copied = pick.bundle.as_dict()
    assert copied == doc["active"]
    copied["config"]["temperature"] = 2.0
    assert pick.bundle.config["temperature"] == 0.3


# -- concurrency ---------------------------------------------------------------------------------

def test_readers_during_many_reloads_see_whole_snapshots(tmp_path):
    models = [f"m{i}" for i in range(6)]
    cm = ConfigMapDir(tmp_path / "routing")

    def generation(g: int) -> dict[str, dict]:
        return {f"{m}.json": document(name=m, active=f"1.0.{g}", canary=(f"2.0.{g}", 50)) for m in models}

    cm.publish(generation(0))
    router = serving.Router.from_directory(cm.root)
    done = threading.Event()
    failures: list[BaseException] = []
    seen: list[int] = []

    def reader(n: int) -> None:
        keys = [f"r{n}-{i}" for i in range(8)]
        last = 0
        try:
            while not done.is_set():
                snap = router.snapshot
                gens = {snap.pick(m, k).version.split(".")[2] for m in models for k in keys}
                assert len(gens) == 1, gens  # one snapshot never mixes two generations
                gen = int(gens.pop())
                assert gen >= last  # and a reader never goes back in time
                last = gen
                router.pick(models[n % len(models)], keys[0])
                if n % 2:
                    router.maybe_reload()  # readers racing the writer for the reload lock
            seen.append(last)
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    threads = [threading.Thread(target=reader, args=(n,)) for n in range(4)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often: more interleavings, and the writer is not starved
    for t in threads:
        t.start()
    try:
        for g in range(1, 101):
            cm.publish(generation(g))
            router.reload()
    finally:
        done.set()
        for t in threads:
            t.join()
        sys.setswitchinterval(interval)
    assert failures == []
    assert router.error is None and router.pick("m0", "k").version.endswith(".100")
    assert len(seen) == 4


# -- import cost ---------------------------------------------------------------------------------

def test_importing_serving_loads_no_heavy_dependency():
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "import modelctl.serving"], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    loaded = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
    assert "modelctl.serving" in loaded
    heavy = {m for m in loaded if m.split(".")[0] in {"typer", "click", "rich", "ruamel", "yaml", "jsonschema", "httpx"}}
    assert heavy == set() and "modelctl.registry" not in loaded and "modelctl.store" not in loaded


# -- issue 15: a canary limited to a segment, and a rollback's change ------------------------------

SEGMENT = {"name": "eu", "attribute": "region", "in": ["eu-west-1", "eu-central-1"]}


def test_a_segment_canary_is_picked_only_for_attributes_in_it(tmp_path):
    doc = document(canary=("1.1.0", 100))
    doc["canary"]["segment"] = dict(SEGMENT)
    doc["assignment"]["segment_when"] = "attributes[canary.segment.attribute] is one of canary.segment.in"
    doc["change"] = {"from": "1.2.0", "to": "1.0.0", "kind": "config", "redeploy": False}
    path = tmp_path / "doc.json"
    write_json(path, doc)
    router = serving.Router.from_file(path)
    for key in ("user-1", "user-2", "user-3"):
        pick = router.pick(NAME, key, attributes={"region": "eu-central-1"})
        assert (pick.version, pick.role, pick.segment) == ("1.1.0", "canary", "eu")
        assert pick.attributes()["modelctl.segment"] == "eu"
        for outside in (None, {}, {"region": "us-east-1"}, {"region": ["eu-west-1"]}, {"tier": "eu-west-1"}):
            pick = router.pick(NAME, key, attributes=outside)
            assert (pick.version, pick.role, pick.segment) == ("1.0.0", "active", None)
            assert "modelctl.segment" not in pick.attributes()


def test_without_a_segment_attributes_change_nothing(tmp_path):
    path = tmp_path / "doc.json"
    write_json(path, document(canary=("1.1.0", 50)))
    router = serving.Router.from_file(path)
    for i in range(200):
        key = f"k{i}"
        assert router.pick(NAME, key, attributes={"tier": "internal"}) == router.pick(NAME, key)


def _segment(change):
    doc = document(canary=("1.1.0", 10))
    doc["canary"]["segment"] = dict(SEGMENT)
    change(doc)
    return doc


@pytest.mark.parametrize("doc,message", [
    (_segment(lambda d: d["canary"].update(segment="eu")), "canary.segment must be an object or null"),
    (_segment(lambda d: d["canary"]["segment"].update(name="EU_1")), "canary.segment.name must be a segment name"),
    (_segment(lambda d: d["canary"]["segment"].pop("attribute")), "canary.segment.attribute must be a non-empty"),
    (_segment(lambda d: d["canary"]["segment"].update(equals="x")), "exactly one of equals and in"),
    (_segment(lambda d: d["canary"]["segment"].pop("in")), "exactly one of equals and in"),
    (_segment(lambda d: d["canary"]["segment"].update({"in": []})), "canary.segment.in must be a non-empty list"),
    (_segment(lambda d: d["canary"]["segment"].pop("in") and d["canary"]["segment"].update(equals=3)),
     "canary.segment.equals must be a string"),
    (_segment(lambda d: d.update(change={"from": "1.2.0", "to": "1.0.0", "kind": "config"})),
     "change must be an object with from, to, kind"),
])
def test_invalid_segments_and_changes_are_refused(tmp_path, doc, message):
    path = tmp_path / "doc.json"
    write_json(path, doc)
    with pytest.raises(serving.InvalidRoutingDocument) as err:
        serving.Router.from_file(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)


# -- routes (issue 15): pick(model, key, route=R) ---------------------------------------------------

def routed_document():
    """1.0.0 active with a 1.1.0 canary at 10 %; route search follows the model, summarise is pinned to 0.9.0
    with an ordered fallback, chat runs its own 1.2.0 canary at 50 % with a weighted fallback."""
    doc = document(canary=("1.1.0", 10))
    doc["routes"] = {
        "search": {"active": entry("1.0.0", 90), "canary": entry("1.1.0", 10, model_id="gpt-4.1-2025-04-14"),
                   "fallback": None, "follows_model": True},
        "summarise": {"active": entry("0.9.0", 100), "canary": None, "follows_model": False,
                      "fallback": {"policy": "ordered", "chain": [{"provider": "anthropic", "id": "claude-a-20250101"},
                                                                  {"provider": "openai", "id": "gpt-b-2025-01-01"}]}},
        "chat": {"active": entry("1.0.0", 50), "canary": entry("1.2.0", 50), "follows_model": True,
                 "fallback": {"policy": "weighted", "chain": [{"provider": "anthropic", "id": "a", "weight": 3},
                                                              {"provider": "openai", "id": "b", "weight": 1}]}},
    }
    return doc


def test_pick_on_a_route_applies_its_pin_canary_and_fallback_chain(tmp_path):
    path = tmp_path / "doc.json"
    write_json(path, routed_document())
    router = serving.Router.from_file(path)
    keys = [f"user-{i}" for i in range(2000)]
    for k in keys:
        b = routing.bucket(NAME, k)
        model = router.pick(NAME, k)
        assert model.route is None and model.fallbacks == () and model.version == ("1.1.0" if b < 1000 else "1.0.0")
        assert router.pick(NAME, k, route="search").version == model.version
        pinned = router.pick(NAME, k, route="summarise")
        assert (pinned.version, pinned.role, pinned.route, pinned.fallback_policy) == ("0.9.0", "active", "summarise",
                                                                                      "ordered")
        assert [f["id"] for f in pinned.fallbacks] == ["claude-a-20250101", "gpt-b-2025-01-01"]
        chat = router.pick(NAME, k, route="chat")
        assert chat.version == ("1.2.0" if b < 5000 else "1.0.0") and chat.role == ("canary" if b < 5000 else "active")
        order = routing.fallback_order(NAME, "chat", k, [{"weight": 3}, {"weight": 1}], "weighted")
        assert [f["id"] for f in chat.fallbacks] == [["a", "b"][i] for i in order]
        assert chat.attributes()["modelctl.route"] == "chat" and "modelctl.route" not in model.attributes()
    firsts = Counter(router.pick(NAME, k, route="chat").fallbacks[0]["id"] for k in keys)
    assert 0.70 < firsts["a"] / len(keys) < 0.80  # weight 3 of 4, give or take sampling
    # a route the document does not declare is an error naming the ones it does
    with pytest.raises(serving.UnknownRoute, match=r"support-agent has no route 'billing' \(routes: chat, search, "
                                                   r"summarise\)"):
        router.pick(NAME, "user-1", route="billing")
    # a document without routes answers any route as the model (a gateway may send routes before they exist)
    write_json(path, document(canary=("1.1.0", 10)))
    router.reload()
    for k in keys[:200]:
        assert router.pick(NAME, k, route="billing").version == router.pick(NAME, k).version


def test_pick_on_a_route_agrees_with_resolve_route_key(tmp_path, monkeypatch):
    from test_routes import build

    reg, step = build(tmp_path / "reg", monkeypatch)
    step(reg.rollback, NAME, route="summarise", from_="1.0.1")
    step(reg.shadow, NAME, "1.0.2", 10)
    step(reg.canary, NAME, "1.0.2", 25, route="chat")
    proc = run_cli("render", NAME, "--format", "json", cwd=reg.root)
    path = tmp_path / "doc.json"
    write_json(path, json.loads(proc.stdout)["documents"][0])
    from_file, from_git = serving.Router.from_file(path), serving.Router.from_registry(reg.root)
    for k in [f"k{i}" for i in range(300)]:
        for r in ("search", "summarise", "chat"):
            want = reg.resolve(NAME, key=k, route=r)["key"]
            for router in (from_file, from_git):
                got = router.pick(NAME, k, route=r)
                assert (got.version, got.role) == (want["version"], want["role"]), (k, r)
    assert from_file.pick(NAME, "k1", route="summarise").fallbacks[0]["id"] == "claude-sonnet-4-5-20250929"


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(routes=[]), "routes must be an object"),
    (lambda d: d["routes"].update(Bad_Name={}), "route name 'Bad_Name' is not a DNS label"),
    (lambda d: d["routes"]["search"].update(active=None), "routes.search.active must be a resolved bundle"),
    (lambda d: d["routes"]["chat"]["canary"].update(percent=0), "routes.chat.canary.percent must be a number"),
    (lambda d: d["routes"]["chat"]["fallback"].update(policy="random"), "fallback.policy must be ordered or weighted"),
    (lambda d: d["routes"]["chat"]["fallback"]["chain"][0].pop("weight"), "with a whole weight >= 1"),
    (lambda d: d["routes"]["summarise"]["fallback"].update(chain=[]), "routes.summarise.fallback.chain must list"),
])
def test_invalid_routes_are_refused(tmp_path, change, message):
    doc = routed_document()
    change(doc)
    path = tmp_path / "doc.json"
    write_json(path, doc)
    with pytest.raises(serving.InvalidRoutingDocument, match=re.escape(message)):
        serving.Router.from_file(path)
