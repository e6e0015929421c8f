"""Every `--json` output matches its published schema (schemas/output/), in the states that fill its optional fields.

The commands run as real processes against real registries: a lifecycle walked through by the CLI
(registration, staging, shadow with its cost, a canary with its gate, a review branch, a rollback and
its hold), a clone pushing to a bare remote for doctor, a broken commit for check, and watch against
a real HTTP metrics server until it rolls the canary back (its poll record then replayed), alerts, or
holds on an unreachable endpoint. The TypedDicts of modelctl/documents.py name the same keys as the
schemas, and a command with --json and no schema fails here.
"""
from __future__ import annotations

import functools
import json
import subprocess

import pytest
import typer
from conftest import ROOT, git, run_cli
from evalkit import NAME, bundle_file, configure, write_report
from lifecyclekit import isolated_env

from modelctl.documents import OUTPUT_SCHEMAS

OUTPUT = ROOT / "schemas" / "output"


def _schemas() -> dict[str, dict]:
    """Every schema under schemas/ (input and output), by file path relative to schemas/."""
    return {str(p.relative_to(ROOT / "schemas")): json.loads(p.read_text()) for p in sorted((ROOT / "schemas").rglob("*.json"))}


@functools.cache
def _validator(command: str):
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    # output schemas may $ref an input schema by its $id (show NAME@VERSION holds a bundle)
    resources = [(s["$id"], Resource.from_contents(s)) for s in _schemas().values()]
    schema = json.loads((OUTPUT / OUTPUT_SCHEMAS[command]).read_text())
    return Draft202012Validator(schema, registry=Registry().with_resources(resources))


def assert_valid(command: str, doc) -> None:
    """`doc` is valid against the schema of `command` (the best error in the message when not)."""
    from jsonschema.exceptions import best_match

    error = best_match(_validator(command).iter_errors(doc))
    assert error is None, f"{command}: {'/'.join(map(str, error.absolute_path))}: {error.message}"


def cli_json(command: str, *args, cwd, code: int = 0, env=None) -> dict:
    """Run `modelctl COMMAND ARGS --json`, check its exit code and its document against the schema."""
    proc = run_cli(command, *args, "--json", cwd=cwd, env=env)
    assert proc.returncode == code, (command, args, proc.returncode, proc.stderr)
    doc = json.loads(proc.stdout)
    assert_valid(command, doc)
    return doc


# -- the schemas themselves -------------------------------------------------------------------------

def test_every_schema_is_a_valid_draft_2020_12_schema_with_a_unique_id():
    from jsonschema import Draft202012Validator

    schemas = _schemas()
    assert len(schemas) >= 4 + len(set(OUTPUT_SCHEMAS.values()))
    for path, schema in schemas.items():
        Draft202012Validator.check_schema(schema)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema", path
    ids = [s["$id"] for s in schemas.values()]
    assert len(ids) == len(set(ids)), ids


def _walk(node, where: str):
    """(where, schema node) of every sub-schema with properties."""
    if isinstance(node, dict):
        if "properties" in node:
            yield where, node
        for key, value in node.items():
            yield from _walk(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{where}/{i}")


def test_output_schemas_describe_every_property_and_close_their_objects():
    for path in sorted(OUTPUT.glob("*.schema.json")):
        schema = json.loads(path.read_text())
        assert schema["$id"] == f"https://modelctl.dev/schemas/v1/output/{path.name}"
        assert schema["title"] and schema["description"], path.name
        for where, node in _walk(schema, path.name):
            assert node.get("additionalProperties") is False, where
            assert set(node.get("required", [])) <= set(node["properties"]), where
            for key, prop in node["properties"].items():
                assert prop.get("description"), f"{where}/properties/{key} has no description"
            if "schema" in node["properties"]:  # a document's top level: the promised marker
                assert node["properties"]["schema"]["const"] == "modelctl/v1", where
        text = path.read_text()
        for pattern in [p for _, p in _patterns(schema)]:
            assert pattern.startswith("^") and pattern.endswith("$"), (path.name, pattern)
        assert text.endswith("}\n")


def _patterns(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "pattern" and isinstance(value, str):
                yield key, value
            else:
                yield from _patterns(value)
    elif isinstance(node, list):
        for value in node:
            yield from _patterns(value)


def test_every_command_with_json_has_a_published_schema():
    from modelctl.cli import app

    group = typer.main.get_command(app)
    with_json = {name for name, cmd in group.commands.items()
                 if any("--json" in getattr(p, "opts", ()) for p in cmd.params)}
    assert with_json == set(OUTPUT_SCHEMAS), "a command with --json needs an entry in documents.OUTPUT_SCHEMAS"
    published = {p.name for p in OUTPUT.glob("*.schema.json")}
    # notification.schema.json is the body watch POSTs to webhooks (modelctl.notify), not a command's output
    assert set(OUTPUT_SCHEMAS.values()) | {"notification.schema.json"} == published


# (TypedDict in modelctl/documents.py, schema file, JSON pointer of the object schema inside it)
TYPED = [
    ("InitDocument", "init", ""),
    ("WriteDocument", "write", ""),
    ("RegisterResult", "write", "/$defs/registerResult"),
    ("TransitionResult", "write", "/$defs/transitionResult"),
    ("ShadowCost", "write", "/$defs/cost"),
    ("GcResult", "write", "/$defs/gcResult"),
    ("CompatDocument", "compat", ""),
    ("CompatRow", "compat", "/properties/rows/items"),
    ("RollbackChange", "write", "/$defs/change"),
    ("PullRequest", "write", "/properties/pull_request"),
    ("StatusDocument", "status", ""),
    ("StatusRow", "status", "/properties/models/items"),
    ("Split", "status", "/$defs/split"),
    ("Hold", "status", "/$defs/hold"),
    ("ShowModelDocument", "show", "/$defs/model"),
    ("ShowVersion", "show", "/$defs/model/properties/versions/items"),
    ("ShowBundleDocument", "show", "/$defs/bundle"),
    ("DiffDocument", "diff", ""),
    ("FieldChange", "diff", "/$defs/changes/items"),
    ("ResolveDocument", "resolve", ""),
    ("ResolvedBundle", "resolve", "/$defs/resolved"),
    ("Assignment", "resolve", "/properties/assignment"),
    ("KeyAssignment", "resolve", "/properties/key"),
    ("LogDocument", "log", ""),
    ("LogEvent", "log", "/properties/events/items"),
    ("LogSigner", "log", "/properties/events/items/properties/signer"),
    ("WhichDocument", "which", ""),
    ("WhichEvent", "which", "/properties/event/anyOf/0"),
    ("CheckDocument", "check", ""),
    ("DeprecationsDocument", "deprecations", ""),
    ("RetiringModel", "deprecations", "/properties/models/items"),
    ("RetiringUse", "deprecations", "/properties/models/items/properties/versions/items"),
    ("CheckFinding", "check", "/properties/findings/items"),
    ("DoctorDocument", "doctor", ""),
    ("DoctorRemote", "doctor", "/properties/remote"),
    ("DoctorFinding", "doctor", "/properties/findings/items"),
    ("GateDocument", "gate", ""),
    ("GateMetric", "gate", "/properties/metrics/items"),
    ("ReportRef", "gate", "/properties/candidate"),
    ("WatchPollLine", "watch", "/$defs/poll"),
    ("WatchEventLine", "watch", "/$defs/event"),
    ("WatchResultLine", "watch", "/$defs/result"),
    ("MetricRow", "watch", "/$defs/row"),
    ("PollSplit", "watch", "/$defs/pollSplit"),
    ("ShadowReport", "watch", "/$defs/poll/properties/shadow/anyOf/0"),
    ("ReplayDocument", "replay", ""),
    ("CanaryReplayDocument", "replay", "/properties/canaries/items"),
    ("DecisionDocument", "replay", "/$defs/decision"),
    ("MetricEvidence", "replay", "/$defs/evidence"),
]


@pytest.mark.parametrize("typed, command, pointer", TYPED, ids=[t[0] for t in TYPED])
def test_typed_documents_and_schemas_name_the_same_keys(typed, command, pointer):
    from modelctl import documents

    node = json.loads((OUTPUT / f"{command}.schema.json").read_text())
    for part in pointer.split("/")[1:]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    cls = getattr(documents, typed)
    assert set(cls.__annotations__) == set(node["properties"]), typed
    # `schema` is added by the printer, so the builders' types may leave it out
    assert set(cls.__required_keys__) - {"schema"} == set(node.get("required", [])) - {"schema"}, typed


def test_every_output_document_type_is_checked_against_its_schema():
    from typing import is_typeddict

    from modelctl import documents

    declared = {name for name, value in vars(documents).items() if is_typeddict(value) and not name.startswith("_")}
    # parts of a document that the schemas spell out inside it: BundleDiff (of DiffDocument), RoutingDocument
    # (of ResolveDocument)
    assert declared - {"BundleDiff", "RoutingDocument"} == {t[0] for t in TYPED}


def test_the_package_ships_the_output_schemas():
    from modelctl.schema import data_path

    for name in set(OUTPUT_SCHEMAS.values()):
        shipped = data_path("schemas", "output", name)
        assert json.loads(shipped.read_text("utf-8")) == json.loads((OUTPUT / name).read_text())
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"data/schemas/output/*.json"' in pyproject  # package-data: what the wheel carries


def test_a_schema_rejects_a_document_it_does_not_describe():
    """The schemas are closed: a renamed key or a wrong type fails, so the checks above can fail."""
    from jsonschema import ValidationError

    good = {"schema": "modelctl/v1", "path": "/x", "commit": "a" * 40, "files": ["modelctl.yaml"]}
    assert_valid("init", good)
    for bad in ({**good, "extra": 1}, {k: v for k, v in good.items() if k != "files"}, {**good, "commit": "HEAD"},
                {**good, "schema": "modelctl/v2"}):
        with pytest.raises(ValidationError):
            _validator("init").validate(bad)


# -- a lifecycle walked through the CLI ----------------------------------------------------------------

@pytest.fixture(scope="module")
def journey(tmp_path_factory):
    """Every --json document of a model's life, by step; built once (the tests only read it)."""
    base = tmp_path_factory.mktemp("journey")
    docs: dict[str, dict] = {}
    with isolated_env(tmp_path_factory):
        reg = base / "reg"
        docs["init"] = cli_json("init", reg, cwd=base)
        (reg / "prompts" / "p1.txt").write_text("You are helpful.\n")
        git(reg, "add", "prompts")
        git(reg, "commit", "-q", "-m", "prompts")
        configure(reg, gate_required=True)  # canary and active promotions record the gate

        def register(version, parent=None, **kw):
            write_report(reg, version)
            return cli_json("register", bundle_file(base, version, parent, **kw), cwd=reg)

        docs["register"] = register("1.0.0")
        docs["register again"] = cli_json("register", bundle_file(base, "1.0.0"), cwd=reg)
        cli_json("promote", NAME, "1.0.0", "--to", "staging", cwd=reg)
        docs["promote active"] = cli_json("promote", NAME, "1.0.0", "--to", "active", cwd=reg)
        register("1.1.0", "1.0.0", temperature=0.4, fallbacks=True)
        register("1.2.0", "1.1.0", temperature=0.5, fallbacks=True)
        for version in ("1.1.0", "1.2.0"):
            cli_json("promote", NAME, version, "--to", "staging", cwd=reg)
        docs["shadow"] = cli_json("shadow", NAME, "1.1.0", "--pct", "10", cwd=reg)
        docs["canary"] = cli_json("canary", NAME, "1.1.0", "--pct", "5", cwd=reg)
        docs["shadow 1.2.0"] = cli_json("shadow", NAME, "1.2.0", "--pct", "20", cwd=reg)
        # canary and shadow live: every read command sees both
        docs["status"] = cli_json("status", cwd=reg)
        docs["status name"] = cli_json("status", NAME, cwd=reg)
        docs["show"] = cli_json("show", NAME, cwd=reg)
        docs["show version"] = cli_json("show", f"{NAME}@1.1.0", cwd=reg)
        docs["diff"] = cli_json("diff", NAME, "1.0.0", "1.1.0", cwd=reg)
        docs["diff same"] = cli_json("diff", NAME, "1.1.0", "1.1.0", cwd=reg)
        docs["resolve"] = cli_json("resolve", NAME, cwd=reg)
        docs["resolve key"] = cli_json("resolve", NAME, "--key", "user-42", cwd=reg)
        docs["which"] = cli_json("which", NAME, "--at", "now", "--key", "user-42", cwd=reg)
        docs["which before"] = cli_json("which", NAME, "--at", "2001-01-01", "--key", "user-42", cwd=reg)
        docs["gate"] = cli_json("gate", NAME, "1.2.0", cwd=reg)
        docs["check"] = cli_json("check", cwd=reg)
        docs["check changed"] = cli_json("check", "--changed-since", "HEAD~3", cwd=reg)
        docs["doctor"] = cli_json("doctor", cwd=reg)
        docs["branch"] = cli_json("canary", NAME, "1.1.0", "--pct", "10", "--branch", "review/canary-10", cwd=reg)
        docs["rollback"] = cli_json("rollback", NAME, "--reason", "error rate doubled", cwd=reg)
        docs["rollback again"] = cli_json("rollback", NAME, cwd=reg)
        docs["status after rollback"] = cli_json("status", NAME, cwd=reg)
        docs["log"] = cli_json("log", NAME, cwd=reg)
        # a hand edit without trailers: log infers the event from the deployment diff
        path = reg / "deployments" / f"{NAME}.yaml"
        path.write_text(path.read_text().replace("percent: 20", "percent: 30"))
        git(reg, "commit", "-q", "-am", "widen the shadow")
        docs["log inferred"] = cli_json("log", NAME, "--limit", "2", cwd=reg)
        docs["which after"] = cli_json("which", NAME, "--at", "now", cwd=reg)
    return docs


def test_write_outputs_match_the_schema_with_every_kind_of_result(journey):
    assert journey["init"]["files"] and journey["init"]["commit"]
    assert journey["register"]["result"]["semver"] is None and journey["register"]["tags"] == [f"{NAME}@v1.0.0"]
    again = journey["register again"]
    assert again["noop"] is True and again["commit"] is None and "already registered" in again["result"]["note"]
    assert journey["promote active"]["result"]["to"] == "active"
    cost = journey["shadow"]["result"]["cost"]
    assert cost["percent"] == 10 and cost["over_budget"] is False
    live = journey["canary"]["result"]["canary"]
    assert (live["version"], live["percent"]) == ("1.1.0", 5)
    assert journey["canary"]["result"]["gate"].startswith("pass")
    pr = journey["branch"]["pull_request"]
    assert pr["branch"] == "review/canary-10" and pr["base"] == "main" and pr["body"] and pr["body_file"] is None
    assert journey["branch"]["tags"] == []
    assert journey["rollback"]["result"]["hold"]["version"] == "1.1.0"
    assert journey["rollback"]["result"]["reason"] == "error rate doubled"
    again = journey["rollback again"]
    assert again["noop"] is True and isinstance(again["result"], str)


def test_read_outputs_match_the_schema_with_canary_shadow_and_hold(journey):
    model = journey["status"]["models"][0]
    assert model["canary"]["version"] == "1.1.0" and model["shadow"]["version"] == "1.2.0"
    assert journey["status after rollback"]["models"][0]["hold"]["version"] == "1.1.0"
    assert [v["status"] for v in journey["show"]["versions"]] == ["active", "canary", "shadow"]
    assert journey["show version"]["bundle"]["fallbacks"]
    assert journey["diff"]["changed"] and journey["diff same"]["changed"] == []
    resolved = journey["resolve key"]
    assert resolved["canary"]["fallbacks"] and resolved["shadow"] and resolved["key"]["role"] in ("active", "canary")
    assert "key" not in journey["resolve"]
    assert journey["which"]["served_by"] in ("1.0.0", "1.1.0") and journey["which"]["event"]["action"] == "shadow"
    before = journey["which before"]
    assert before["commit"] is None and before["first_event"] and before["served_by"] is None
    assert "bucket" not in journey["which after"] and journey["which after"]["event"]["inferred"] is True
    actions = [e["action"] for e in journey["log"]["events"]]
    assert actions[0] == "rollback" and "register" in actions
    assert journey["log inferred"]["events"][0]["inferred"] is True


def test_ci_outputs_match_the_schema(journey):
    assert journey["gate"]["passed"] is True and journey["gate"]["baseline"]["version"] == "1.0.0"
    assert {m["test"] for m in journey["gate"]["metrics"]} >= {"farrington-manning"}
    assert journey["check"]["ok"] is True and "changed_since" not in journey["check"]
    assert journey["check changed"]["changed_since"] == "HEAD~3"
    assert journey["doctor"]["ok"] is True and journey["doctor"]["remote"]["push"] is False


def test_check_errors_match_the_schema(registry):
    path = registry / "deployments" / "broken.yaml"
    path.write_text("apiVersion: modelctl/v1\nkind: Deployment\nname: broken\nactive: 1.0\nversions: {}\n")
    git(registry, "add", "deployments")
    git(registry, "commit", "-q", "-m", "a broken deployment")
    for fmt in (["--json"], ["--format", "json"]):
        proc = run_cli("check", *fmt, cwd=registry)
        assert proc.returncode == 1, proc.stderr
        doc = json.loads(proc.stdout)
        assert_valid("check", doc)
        assert doc["ok"] is False and doc["errors"] >= 1
        assert any(f["path"] == "deployments/broken.yaml" and f["line"] for f in doc["findings"])


def test_doctor_against_a_remote_matches_the_schema(registry, tmp_path):
    from gitremote import bare_remote

    bare_remote(registry, tmp_path / "remote.git")
    git(registry, "commit", "-q", "--allow-empty", "-m", "local only")
    doc = cli_json("doctor", "--push", cwd=registry, code=1)
    assert doc["remote"]["reachable"] is True and doc["remote"]["ahead"] == 1
    assert any(f["kind"] == "unpushed-commits" and f["fix"] for f in doc["findings"])
    fixed = cli_json("doctor", "--push", "--fix", cwd=registry)
    assert fixed["fix"] is True and fixed["fixed"]
    git(registry, "remote", "set-url", "origin", "file://" + str(tmp_path / "gone.git"))
    gone = cli_json("doctor", "--push", cwd=registry, code=4)
    assert gone["remote"]["reachable"] is False


def test_gate_without_a_baseline_and_failing_matches_the_schema(registry, tmp_path):
    write_report(registry, "1.0.0")
    run = run_cli("register", bundle_file(tmp_path, "1.0.0"), cwd=registry)
    assert run.returncode == 0, run.stderr
    first = cli_json("gate", NAME, "1.0.0", cwd=registry)
    assert first["baseline"] == {"name": None, "version": None} and first["note"]
    for to in ("staging", "active"):
        assert run_cli("promote", NAME, "1.0.0", "--to", to, cwd=registry).returncode == 0
    write_report(registry, "1.1.0", accuracy=(0.80, 1200), hallucination_rate=(0.011, 1200), latency_p95_ms=(870, None))
    assert run_cli("register", bundle_file(tmp_path, "1.1.0", "1.0.0", temperature=0.4), cwd=registry).returncode == 0
    failed = cli_json("gate", NAME, "1.1.0", cwd=registry, code=1)
    assert failed["passed"] is False and failed["failures"] == ["accuracy"]
    out = tmp_path / "gate.json"
    proc = run_cli("gate", NAME, "1.1.0", "--format", "json", "--output", out, cwd=registry)
    assert proc.returncode == 1 and proc.stdout == ""
    assert_valid("gate", json.loads(out.read_text()))


# -- watch and replay -------------------------------------------------------------------------------

def _watch_lines(proc: subprocess.CompletedProcess) -> list[dict]:
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    for line in lines:
        assert_valid("watch", line)
    return lines


def test_watch_lines_and_replay_match_their_schemas(tmp_path, write_bundle):
    from metrics_servers import JsonMetricsServer
    from test_watch import set_deployment_of
    from test_watch_e2e import ACTIVE, CANARY, FAST_CONFIG, make_registry

    registry = make_registry(tmp_path / "reg", NAME, write_bundle, FAST_CONFIG)
    assert run_cli("register", write_bundle("c.yaml", version="1.0.2", parent=CANARY, prompt="prompts/p2.txt",
                                            temperature=0.5), cwd=registry).returncode == 0
    # a shadow too: every poll line reports it
    set_deployment_of(registry, NAME, shadow={"version": "1.0.2", "percent": 50},
                      versions={ACTIVE: "active", CANARY: "canary", "1.0.2": "shadow"})
    record = tmp_path / "polls.jsonl"
    seen: list[dict] = []
    with JsonMetricsServer(NAME) as server:
        server.traffic(ACTIVE, 50_000, 0.01)
        server.traffic(CANARY, 5_000, 0.01)
        dry = run_cli("watch", NAME, "--once", "--dry-run", "--json", "--url", server.url, cwd=registry)
        assert dry.returncode == 0 and all(line["dry_run"] for line in _watch_lines(dry) if line["event"] == "poll")
        for _ in range(15):
            proc = run_cli("watch", NAME, "--once", "--json", "--url", server.url, "--record", record, cwd=registry)
            seen += _watch_lines(proc)
            if proc.returncode != 0:
                break
            server.traffic(ACTIVE, 9_000, 0.01)
            server.traffic(CANARY, 1_000, 0.06)
    assert proc.returncode == 1, proc.stderr
    events = {line["event"] for line in seen}
    assert {"poll", "result"} <= events and "header" in events
    assert seen[-1]["outcome"] == "rolled-back" and seen[-1]["commit"] and seen[-1]["evidence"]
    assert any(line["event"] == "poll" and line["shadow"] and line["metrics"] for line in seen)
    set_deployment_of(registry, NAME, shadow=None, versions={ACTIVE: "active", CANARY: "rolled-back", "1.0.2": "staging"})
    nothing = run_cli("watch", NAME, "--once", "--json", cwd=registry)
    assert nothing.returncode == 0 and _watch_lines(nothing)[-1]["outcome"] == "nothing-to-watch"

    replayed = cli_json("replay", record, cwd=registry)
    assert replayed["canaries"][0]["action"] == "rollback" and replayed["canaries"][0]["decision"]["results"]


def test_watch_hold_fail_safe_line_matches_the_schema(tmp_path, write_bundle):
    from gitremote import free_port
    from test_watch_e2e import make_registry

    registry = make_registry(tmp_path / "reg", NAME, write_bundle, {"analysis": {"consecutive_errors": 2},
                                                                  "metrics": {"timeout": 0.3, "deadline": 0.6}})
    url = f"http://127.0.0.1:{free_port()}/metrics/{{model}}"
    proc = run_cli("watch", NAME, "--json", "--url", url, "--interval", "0.1s", cwd=registry)
    assert proc.returncode == 4, proc.stderr
    lines = _watch_lines(proc)
    assert lines[-1]["outcome"] == "held" and lines[-1]["exit_code"] == 4
    assert all(line["error"] for line in lines if line["event"] == "poll")


def test_watch_alert_line_matches_the_schema(tmp_path, write_bundle):
    from metrics_servers import JsonMetricsServer
    from test_watch_e2e import ACTIVE, CANARY, FAST_CONFIG, make_registry

    registry = make_registry(tmp_path / "reg", NAME, write_bundle, FAST_CONFIG)
    alerts: list[dict] = []
    with JsonMetricsServer(NAME) as server:
        server.traffic(ACTIVE, 50_000, 0.01)
        server.traffic(CANARY, 5_000, 0.01)
        for _ in range(15):
            proc = run_cli("watch", NAME, "--once", "--json", "--url", server.url, cwd=registry)
            assert proc.returncode == 0, proc.stderr
            alerts = [line for line in _watch_lines(proc) if line["event"] == "alert"]
            if alerts:
                break
            # healthy errors, three times the control's cost per request: cost_per_request only alerts
            server.traffic(ACTIVE, 9_000, 0.01)
            server.traffic(CANARY, 1_000, 0.01)
            server.add(ACTIVE, cost_total=9.0)
            server.add(CANARY, cost_total=3.0)
    assert alerts and alerts[0]["version"] == CANARY and alerts[0]["evidence"][0].startswith("cost_per_request fail")
