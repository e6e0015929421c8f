"""Issue 15 §2 and §3: canaries limited to caller segments, and rollbacks that say what changed.

Real registries (modelctl init in tmp dirs), the real CLI in a subprocess for the behaviour a user
sees, the Python API to set up the states in between.
"""
from __future__ import annotations

import json

import pytest
from conftest import bundle_text, git, new_registry, repo_state, run_cli

import modelctl
from modelctl import routing, segments, serving

NAME = "support-agent"


def rendered(reg_path, name=NAME) -> dict:
    """The routing document inside the model's rendered ConfigMap at HEAD."""
    text = git(reg_path, "show", f"HEAD:rendered/modelctl-{name}.yaml")
    body = text.split(": |\n", 1)[1]
    return json.loads("\n".join(line[4:] for line in body.splitlines()))


def deployment(reg_path, name=NAME) -> str:
    return git(reg_path, "show", f"HEAD:deployments/{name}.yaml")


def head_trailers(reg_path) -> str:
    return git(reg_path, "log", "-1", "--format=%(trailers:only,unfold)")


def _register(reg, drafts, **fields):
    f = drafts / f"{fields['version']}.yaml"
    f.write_text(bundle_text(**fields))
    reg.register(f)


@pytest.fixture
def lineage(tmp_path):
    """1.0.0; its children 1.0.1 (prompt only), 1.0.2 (config only) and 1.1.0 (model only); and
    1.0.3, a child of 1.0.1 that changes the config (prompt and config both differ from 1.0.0).
    1.0.0 is active."""
    reg = modelctl.Registry(new_registry(tmp_path / "reg"))
    drafts = tmp_path / "drafts"
    drafts.mkdir()
    _register(reg, drafts, version="1.0.0")
    _register(reg, drafts, version="1.0.1", parent="1.0.0", prompt="prompts/p2.txt")
    _register(reg, drafts, version="1.0.2", parent="1.0.0", temperature=0.5)
    _register(reg, drafts, version="1.1.0", parent="1.0.0", model_id="gpt-4.1-2025-04-14")
    _register(reg, drafts, version="1.0.3", parent="1.0.1", prompt="prompts/p2.txt", temperature=0.7)
    reg.promote(NAME, "1.0.0", "staging")
    reg.promote(NAME, "1.0.0", "active")
    return reg


def _to_canary(reg, version, pct=10):
    reg.promote(NAME, version, "staging")
    reg.shadow(NAME, version, 5)
    reg.canary(NAME, version, pct)


# -- §3 config-only rollback ----------------------------------------------------------------------

@pytest.mark.parametrize(("version", "kind", "redeploy"), [
    ("1.0.1", "prompt", False),
    ("1.0.2", "config", False),
    ("1.1.0", "model", True),
    ("1.0.3", "prompt,config", False),  # not the active's child: every variable that differs
])
def test_a_canary_rollback_says_what_changed(lineage, version, kind, redeploy):
    _to_canary(lineage, version)
    root = lineage.root
    result = run_cli("rollback", NAME, "--reason", "error rate", cwd=root)
    assert result.returncode == 0, result.stderr
    what = "the model changed: gateways redeploy or warm it" if redeploy else "no model changes: no redeploy or warm-up needed"
    assert f"change {version} -> 1.0.0: {kind} ({what})\n" in result.stderr
    assert f"Modelctl-Change: {kind}\n" in head_trailers(root)
    change = {"from": version, "to": "1.0.0", "kind": kind, "redeploy": redeploy}
    assert rendered(root)["change"] == change
    assert json.loads(run_cli("resolve", NAME, "--json", cwd=root).stdout)["change"] == change
    # the serving client loads the rendered document with its new key
    doc_file = root.parent / "doc.json"
    doc_file.write_text(json.dumps(rendered(root)))
    assert serving.Router.from_file(doc_file).pick(NAME, "user-1").version == "1.0.0"
    assert run_cli("check", cwd=root).returncode == 0


def test_an_active_rollback_to_the_parent_names_one_change(lineage):
    root = lineage.root
    _to_canary(lineage, "1.0.2")
    lineage.promote(NAME, "1.0.2", "active")
    result = run_cli("rollback", NAME, "--from", "1.0.2", "--json", cwd=root)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["result"]["change"] == {"from": "1.0.2", "to": "1.0.0", "kind": "config", "redeploy": False}
    assert "Modelctl-Change: config\n" in head_trailers(root)
    assert 'change:\n  from: "1.0.2"\n  to: "1.0.0"\n  kind: config\n  redeploy: false\n' in deployment(root)


def test_the_next_lifecycle_write_clears_the_change(lineage):
    root = lineage.root
    _to_canary(lineage, "1.0.1")
    lineage.rollback(NAME)
    assert "change" in rendered(root)
    lineage.promote(NAME, "1.0.2", "staging")
    lineage.shadow(NAME, "1.0.2", 5)
    assert "change" not in rendered(root)
    assert "change:" not in deployment(root)
    assert run_cli("check", cwd=root).returncode == 0


def test_a_deployment_without_a_rollback_has_no_change_key(lineage):
    doc = json.loads(run_cli("resolve", NAME, "--json", cwd=lineage.root).stdout)
    assert "change" not in doc and "change" not in rendered(lineage.root)


# -- §2 segments ------------------------------------------------------------------------------------

SEGMENTS_YAML = """
segments:
  attributes: [tier, region]
  rules:
    internal: {attribute: tier, equals: internal}
    eu: {attribute: region, in: [eu-west-1, eu-central-1]}
"""
RULES = {"internal": {"attribute": "tier", "equals": "internal"},
         "eu": {"attribute": "region", "in": ["eu-west-1", "eu-central-1"]}}
INTERNAL = {"tier": "internal"}


def declare_segments(root, text=SEGMENTS_YAML) -> None:
    """`text` in place of the template's own (empty) segments: section, committed."""
    path = root / "modelctl.yaml"
    config = path.read_text()
    if "\nsegments:\n" in config:
        start = config.index("\nsegments:\n")
        end = config.index("  rules: {}", start)
        end = config.index("\n", end) + 1
        config = config[:start] + "\n" + config[end:]
    path.write_text(config + text)
    git(root, "commit", "-q", "-am", "declare segments")


@pytest.fixture
def segmented(lineage):
    """The lineage registry with segments declared and 1.0.1 through staging and shadow."""
    declare_segments(lineage.root)
    lineage.promote(NAME, "1.0.1", "staging")
    lineage.shadow(NAME, "1.0.1", 5)
    return lineage


def keys_by_bucket(limit: int, count: int, below: bool) -> list[str]:
    """Keys of NAME whose bucket is below (or at least) `limit`."""
    out, i = [], 0
    while len(out) < count:
        key = f"user-{i}"
        if (routing.bucket(NAME, key) < limit) == below:
            out.append(key)
        i += 1
    return out


def resolve_key(root, key, *attrs) -> tuple[str, str]:
    result = run_cli("resolve", NAME, "--key", key, *[a for x in attrs for a in ("--attr", x)], cwd=root)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip(), result.stderr


def test_rules_match_exact_strings_and_a_missing_attribute_is_outside():
    assert segments.matches(RULES["internal"], {"tier": "internal"})
    assert not segments.matches(RULES["internal"], {"tier": "Internal"})
    assert not segments.matches(RULES["internal"], {})
    assert not segments.matches(RULES["internal"], None)
    assert not segments.matches(RULES["internal"], {"tier": 1})
    assert segments.matches(RULES["eu"], {"region": "eu-central-1", "tier": "x"})
    assert not segments.matches(RULES["eu"], {"region": "us-east-1"})


@pytest.mark.parametrize(("key", "attributes", "bucket", "version"), segments.TEST_VECTORS)
def test_segment_vectors(key, attributes, bucket, version):
    dep = {"name": segments.VECTOR_MODEL, "active": "2.4.0",
           "canary": {"version": "2.5.0", "percent": 50, "segment": "internal"}}
    assert routing.bucket(segments.VECTOR_MODEL, key) == bucket
    assert routing.assign(dep, key, attributes=attributes, segments=segments.VECTOR_RULES) == version


def test_readme_lists_the_segment_vectors():
    from conftest import ROOT

    readme = (ROOT / "README.md").read_text()
    for key, attributes, bucket, version in segments.TEST_VECTORS:
        shown = ", ".join(f"{k}={v}" for k, v in attributes.items()) or "(none)"
        assert f"| `{key}` | {shown} | {bucket} | {version} |" in readme


def test_over_100000_keys_the_segment_gets_its_percent_and_no_one_else_gets_the_canary():
    dep = {"name": NAME, "active": "1.0.0", "canary": {"version": "1.0.1", "percent": 10, "segment": "internal"}}
    inside = sum(routing.assign(dep, f"k{i}", attributes=INTERNAL, segments=RULES) == "1.0.1"
                 for i in range(100_000))
    assert abs(inside / 100_000 - 0.10) <= 0.005
    outside = [{"tier": "external"}, {}, None, {"region": "eu-west-1"}]
    assert not any(routing.assign(dep, f"k{i}", attributes=outside[i % 4], segments=RULES) == "1.0.1"
                   for i in range(100_000))


def test_a_segment_canary_serves_only_the_segment_then_widens_to_everyone(segmented):
    root = segmented.root
    result = run_cli("canary", NAME, "1.0.1", "--segment", "internal", "--pct", "50", cwd=root)
    assert result.returncode == 0, result.stderr
    assert git(root, "log", "-1", "--format=%s").strip() == "modelctl: canary support-agent 1.0.1 at 50% of segment internal"
    said = head_trailers(root)
    assert "Modelctl-Percent: 50\nModelctl-Segment: internal\n" in said
    assert "segment: internal" in deployment(root)
    doc = rendered(root)
    assert doc["canary"]["segment"] == {"name": "internal", "attribute": "tier", "equals": "internal"}
    assert doc["assignment"]["segment_when"] == segments.SEGMENT_WHEN
    inside, outside = keys_by_bucket(5000, 3, True), keys_by_bucket(5000, 3, False)
    for key in inside:
        assert resolve_key(root, key, "tier=internal")[0] == "1.0.1"
        out, err = resolve_key(root, key)  # no attribute: not in the segment
        assert out == "1.0.0" and "not in segment internal (tier is not given" in err
        assert resolve_key(root, key, "tier=external")[0] == "1.0.0"
    for key in outside:
        assert resolve_key(root, key, "tier=internal")[0] == "1.0.0"
    # the serving client, from the rendered document, agrees
    doc_file = root.parent / "doc.json"
    doc_file.write_text(json.dumps(doc))
    router = serving.Router.from_file(doc_file)
    for key in inside:
        pick = router.pick(NAME, key, attributes=INTERNAL)
        assert (pick.version, pick.role, pick.segment) == ("1.0.1", "canary", "internal")
        assert pick.attributes()["modelctl.segment"] == "internal"
        assert router.pick(NAME, key).version == "1.0.0"
        assert router.pick(NAME, key, attributes={"tier": "external"}).version == "1.0.0"
    # 100 % of the segment is allowed without --pct
    assert run_cli("canary", NAME, "1.0.1", "--segment", "internal", "--pct", "100", cwd=root).returncode == 0
    assert all(resolve_key(root, k, "tier=internal")[0] == "1.0.1" for k in outside)
    # widening: everyone, by the same bucket rule
    result = run_cli("canary", NAME, "1.0.1", "--pct", "10", cwd=root)
    assert result.returncode == 0, result.stderr
    assert git(root, "log", "-1", "--format=%s").strip() == (
        "modelctl: canary support-agent 1.0.1 100% of segment internal -> 10% of everyone")
    assert "Modelctl-Segment" not in head_trailers(root)
    assert "segment" not in deployment(root)
    doc = rendered(root)
    assert "segment" not in doc["canary"] and "segment_when" not in doc["assignment"]
    low = keys_by_bucket(1000, 2, True)
    assert [resolve_key(root, k)[0] for k in low] == ["1.0.1", "1.0.1"]
    assert run_cli("check", cwd=root).returncode == 0


def test_which_answers_a_segment_canary_from_history(segmented):
    root = segmented.root
    assert run_cli("canary", NAME, "1.0.1", "--segment", "internal", "--pct", "50", cwd=root).returncode == 0
    key = keys_by_bucket(5000, 1, True)[0]
    out = json.loads(run_cli("which", NAME, "--at", "now", "--key", key, "--attr", "tier=internal", "--json",
                             cwd=root).stdout)
    assert (out["served_by"], out["role"], out["canary"]["segment"]) == ("1.0.1", "canary", "internal")
    out = json.loads(run_cli("which", NAME, "--at", "now", "--key", key, "--json", cwd=root).stdout)
    assert (out["served_by"], out["role"]) == ("1.0.0", "active")


def test_a_segment_canary_rollback_names_the_segment(segmented):
    root = segmented.root
    assert run_cli("canary", NAME, "1.0.1", "--segment", "eu", cwd=root).returncode == 0
    assert "at 100% of segment eu" in git(root, "log", "-1", "--format=%s")
    result = run_cli("rollback", NAME, cwd=root)
    assert result.returncode == 0, result.stderr
    said = head_trailers(root)
    assert "Modelctl-Segment: eu\n" in said and "Modelctl-Change: prompt\n" in said
    assert "(canary at 100% of segment eu)" in git(root, "log", "-1", "--format=%s")


@pytest.mark.parametrize(("args", "message"), [
    (("--segment", "Internal_1"), "invalid segment name 'Internal_1'"),
    (("--segment", "beta"), "segment 'beta' is not declared in modelctl.yaml (declared: eu, internal)"),
    (("--segment", "internal", "--pct", "7"), "canary percent 7 is not allowed"),
])
def test_bad_segment_input_is_exit_2_and_writes_nothing(segmented, args, message):
    root = segmented.root
    before = repo_state(root)
    result = run_cli("canary", NAME, "1.0.1", *args, cwd=root)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2
    assert repo_state(root) == before


@pytest.mark.parametrize("attr", ["tier", "=internal", "ti er=x", "tier=a\x01b"])
def test_a_malformed_attr_is_exit_2(segmented, attr):
    root = segmented.root
    before = repo_state(root)
    for cmd in (["resolve", NAME, "--key", "k"], ["which", NAME, "--at", "now", "--key", "k"]):
        result = run_cli(*cmd, "--attr", attr, cwd=root)
        assert result.returncode == 2 and "error: invalid --attr" in result.stderr, result.stderr
    result = run_cli("resolve", NAME, "--attr", "tier=internal", cwd=root)
    assert result.returncode == 2 and "--attr describes the request of --key" in result.stderr
    assert repo_state(root) == before


@pytest.mark.parametrize(("text", "message"), [
    ("\nsegments:\n  attributes: [tier]\n  rules:\n    eu: {attribute: region, equals: eu-west-1}\n",
     "segments.rules.eu.attribute: segment eu uses attribute 'region', which segments.attributes does not declare"),
    ("\nsegments:\n  attributes: [tier]\n  rules:\n    Beta_Users: {attribute: tier, equals: beta}\n",
     "segment name 'Beta_Users' is not a DNS label"),
])
def test_a_bad_segment_rule_is_refused_by_check_and_by_every_write(lineage, text, message):
    root = lineage.root
    declare_segments(root, text)
    lineage_before = repo_state(root)
    result = run_cli("check", cwd=root)
    assert result.returncode != 0 and message in result.stdout + result.stderr
    result = run_cli("promote", NAME, "1.0.1", "--to", "staging", cwd=root)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert repo_state(root) == lineage_before


def test_check_judges_hand_edits_of_the_segment(segmented):
    root = segmented.root
    assert run_cli("canary", NAME, "1.0.1", "--segment", "internal", "--pct", "50", cwd=root).returncode == 0
    path = root / "deployments" / f"{NAME}.yaml"
    good = path.read_text()
    base = git(root, "rev-parse", "HEAD").strip()
    # a legal hand edit: 50 % of the segment -> 100 % of it
    path.write_text(good.replace("percent: 50", "percent: 100"))
    git(root, "commit", "-q", "-am", "hand edit: whole segment")
    assert run_cli("render", "--write", cwd=root).returncode == 0
    result = run_cli("check", "--changed-since", base, cwd=root)
    assert result.returncode == 0, result.stdout
    # an illegal one: a segment modelctl.yaml does not declare
    path.write_text(good.replace("segment: internal", "segment: beta"))
    git(root, "commit", "-q", "-am", "hand edit: undeclared segment")
    result = run_cli("check", "--changed-since", base, cwd=root)
    assert result.returncode != 0 and "segment 'beta' is not declared" in result.stdout + result.stderr


# -- watch: a segment canary is judged within its segment ------------------------------------------

@pytest.mark.e2e
def test_watch_rolls_back_a_regression_inside_the_segment_and_names_it(tmp_path, write_bundle):
    """Real CLI, real git, a real http-json server: the canary serves segment internal; inside it
    the canary's error rate is six times the active version's in the same segment."""
    import time

    from test_watch_e2e import ACTIVE, CANARY, assert_rolled_back, finish, live, make_registry, start_watch

    from modelctl import watch as watchmod

    name = "support-agent"
    registry = make_registry(tmp_path / "reg", name, write_bundle, {"segments": {
        "attributes": ["tier"], "rules": {"internal": {"attribute": "tier", "equals": "internal"}}}})
    from test_watch import set_deployment_of

    set_deployment_of(registry, name, canary={"version": CANARY, "percent": 10, "segment": "internal",
                                              "started": watchmod.iso(time.time())})
    server = live(name, segments={"internal": 0.2, "external": 0.8})
    server.segment_rates[(CANARY, "internal")] = 0.06
    with server:
        started = time.time()
        code, lines, err = finish(start_watch(registry, name, "--url", server.url, "--interval", "0.5s",
                                              "--max-duration", "40s"))
    assert code == 1, err
    assert_rolled_back(registry, name, started, lines, metric="error_rate")
    assert "rolled back canary 1.0.1 of support-agent in segment internal" in lines[-1]["message"]
    said = git(registry, "log", "-1", "--format=%(trailers:only,unfold)")
    assert "Modelctl-Segment: internal\n" in said
    assert "(canary at 10% of segment internal), 1.0.0 keeps serving" in git(registry, "log", "-1", "--format=%s")
    assert ACTIVE in said  # Modelctl-Restored


@pytest.mark.e2e
def test_watch_ignores_a_regression_outside_the_segment(tmp_path, write_bundle):
    """The same canary, healthy inside its segment and six times worse outside it (traffic it does not
    serve): judged within the segment, nothing is rolled back."""
    import time

    from test_watch_e2e import CANARY, finish, live, make_registry, polls_of, start_watch

    from modelctl import watch as watchmod

    name = "support-agent"
    registry = make_registry(tmp_path / "reg", name, write_bundle, {"segments": {
        "attributes": ["tier"], "rules": {"internal": {"attribute": "tier", "equals": "internal"}}}})
    from test_watch import set_deployment_of

    set_deployment_of(registry, name, canary={"version": CANARY, "percent": 10, "segment": "internal",
                                              "started": watchmod.iso(time.time())})
    before = repo_state(registry)
    server = live(name, segments={"internal": 0.2, "external": 0.8})
    server.segment_rates[(CANARY, "external")] = 0.06
    with server:
        code, lines, err = finish(start_watch(registry, name, "--url", server.url, "--interval", "0.5s",
                                              "--max-duration", "6s"))
    assert code == 0, err
    assert polls_of(lines) and all(p["action"] != "rollback" for p in polls_of(lines))
    assert repo_state(registry) == before


def test_check_refuses_a_hand_written_change_that_no_rollback_explains(lineage):
    root = lineage.root
    path = root / "deployments" / f"{NAME}.yaml"
    path.write_text(path.read_text() + 'change: {from: "1.0.2", to: "1.0.0", kind: config, redeploy: false}\n')
    git(root, "commit", "-q", "-am", "hand edit: a change without a rollback")
    result = run_cli("check", cwd=root)
    assert result.returncode != 0
    assert "change says a rollback took 1.0.2 out of service for 1.0.0, but active is 1.0.0 and 1.0.2 is registered" \
        in result.stdout


def test_status_and_resolve_show_the_percent_as_a_share_of_the_segment(segmented):
    root = segmented.root
    assert run_cli("canary", NAME, "1.0.1", "--segment", "internal", "--pct", "25", cwd=root).returncode == 0
    status = run_cli("status", cwd=root)
    assert "1.0.1 (25% of internal)" in status.stdout
    table = run_cli("resolve", NAME, cwd=root)
    assert "25% of internal" in table.stdout


def test_a_segment_canary_again_is_already_done_and_writes_nothing(segmented):
    root = segmented.root
    assert run_cli("canary", NAME, "1.0.1", "--segment", "internal", "--pct", "50", cwd=root).returncode == 0
    tags = git(root, "tag", "-l")
    assert "support-agent#canary#" in tags
    before = repo_state(root)
    result = run_cli("canary", NAME, "1.0.1", "--segment", "internal", "--pct", "50", cwd=root)
    assert result.returncode == 0
    assert "already done: 1.0.1 of support-agent is already in canary of segment internal at 50%" in result.stdout
    assert repo_state(root) == before
    # a live canary needs its percent named, with or without a segment
    result = run_cli("canary", NAME, "1.0.1", "--segment", "eu", cwd=root)
    assert result.returncode == 2 and "pass --pct to move it" in result.stderr
    assert repo_state(root) == before
