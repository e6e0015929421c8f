"""modelctl.yaml as one typed, frozen Config: defaults as typed values, immutable all the way down,
and parsed once per operation (a write, a check)."""
from __future__ import annotations

import dataclasses
import hashlib

import pytest
from conftest import git, repo_state, run_cli

import modelctl
from modelctl import config as configmod
from modelctl import schema, yamlio
from modelctl.errors import ModelctlError

MINIMAL = b"apiVersion: modelctl/v1\nkind: Registry\n"


@pytest.fixture
def parses(monkeypatch):
    """How many times modelctl.yaml is parsed (yamlio.loads with that path), from now on."""
    seen: list[str] = []
    loads = yamlio.loads

    def counting(text, path="<string>"):
        if path == configmod.CONFIG_FILE:
            seen.append(path)
        return loads(text, path)

    monkeypatch.setattr(yamlio, "loads", counting)
    return seen


def test_defaults_appear_as_typed_values():
    cfg = configmod.parse(MINIMAL)
    assert cfg.remote == configmod.RemoteConfig(name="origin", branch="main", push=False, deadline=30)
    assert cfg.pipeline.required == ("staging", "shadow", "canary")
    assert cfg.pinning.forbid == ("latest", "default", "*-latest", "*:latest") and dict(cfg.pinning.providers) == {}
    assert cfg.canary.steps == (1, 5, 10, 25, 50) and cfg.canary.min_step_seconds == 300
    assert (cfg.shadow.budget_per_day, cfg.shadow.requests_per_day) == (100.0, 100000)
    assert cfg.analysis.interval == 30 and cfg.analysis.settings["alpha"] == 0.01
    assert set(cfg.analysis.settings["metrics"]) == {"error_rate", "latency", "cost_per_request"}
    assert (cfg.metrics.provider, cfg.metrics.token_env, cfg.metrics.deadline) == ("http-json", None, None)
    assert (cfg.gate.required, cfg.gate.alpha, dict(cfg.gate.metrics)) == (False, 0.05, {})
    assert cfg.deprecation.warn_days == 90
    assert cfg == configmod.defaults()


def test_user_values_replace_or_merge_over_the_defaults():
    cfg = configmod.parse(MINIMAL + b"canary:\n  steps: [2, 20]\npinning:\n  providers:\n    acme: '^a-\\d+$'\n"
                                    b"remote:\n  push: true\n")
    assert cfg.canary.steps == (2, 20) and cfg.canary.min_step_seconds == 300  # merged key by key
    assert dict(cfg.pinning.providers) == {"acme": "^a-\\d+$"}  # replaced whole
    assert cfg.remote.push is True and cfg.remote.name == "origin"


def test_the_config_is_immutable_all_the_way_down():
    cfg = configmod.parse(MINIMAL + b"gate:\n  metrics:\n    accuracy: {better: higher, max_drop: 0.01}\n")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.remote = cfg.remote  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.remote.push = True  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.gate.metrics["accuracy"]["max_drop"] = 0.5  # type: ignore[index]
    with pytest.raises(TypeError):
        cfg.pinning.providers["openai"] = ".*"  # type: ignore[index]
    with pytest.raises(AttributeError):
        cfg.canary.steps.append(100)  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        cfg.analysis.settings["metrics"]["latency"]["quantile"] = 0.5  # type: ignore[index]
    with pytest.raises((AttributeError, TypeError)):  # slots: no attribute can be added either
        cfg.remote.extra = 1  # type: ignore[attr-defined]
    # the plain-data view is a copy: changing it changes nothing in the config
    doc = cfg.as_dict()
    doc["gate"]["metrics"]["accuracy"]["max_drop"] = 0.5
    doc["canary"]["steps"].append(100)
    assert cfg.gate.metrics["accuracy"]["max_drop"] == 0.01 and cfg.canary.steps == (1, 5, 10, 25, 50)


def test_invalid_config_is_refused_before_a_config_exists():
    with pytest.raises(ModelctlError) as err:
        configmod.parse(MINIMAL + b"canary:\n  steps: []\n")
    assert "canary.steps" in str(err.value)


def test_a_write_parses_modelctl_yaml_once_and_keeps_the_validity_cache(registry, write_bundle, parses):
    reg = modelctl.Registry(registry)
    reg.register(write_bundle(version="1.0.0"))
    # _land reads the remote settings at HEAD, the plan reads the config at the tip: one parse
    assert len(parses) == 1
    raw = (registry / "modelctl.yaml").read_bytes()
    assert hashlib.sha256(raw).hexdigest() in schema.ValidCache(reg.store, "Registry").known

    parses.clear()
    fresh = modelctl.Registry(registry)  # a new operation on the same clone
    fresh.promote("support-agent", "1.0.0", "staging")
    assert len(parses) == 1
    assert git(registry, "log", "-1", "--format=%s").strip() == "modelctl: promote support-agent 1.0.0 to staging"

    # a changed file is parsed again (the memo is keyed by the content, not by the clone alone)
    (registry / "modelctl.yaml").write_bytes(raw.replace(b"budget_per_day: 100.0", b"budget_per_day: 50.0"))
    git(registry, "commit", "-q", "-am", "smaller shadow budget")
    parses.clear()
    assert fresh.config().shadow.budget_per_day == 50.0
    assert len(parses) == 1


def test_check_parses_modelctl_yaml_once(registry, parses):
    from modelctl import checks

    doc = checks.run(modelctl.Registry(registry))
    assert doc["ok"] and len(parses) == 1


def test_check_judges_by_the_defaults_when_the_config_is_broken(registry):
    path = registry / "modelctl.yaml"
    path.write_text(path.read_text().replace("warn_days: 90", "warn_days: -1"))
    git(registry, "commit", "-q", "-am", "bad warn_days")
    out = run_cli("check", cwd=registry)
    assert out.returncode == 1 and "modelctl.yaml" in out.stdout and "warn_days" in out.stdout


# --------------------------------------------------------------------------- rules beyond the schema: one home


BROKEN_RULES = [
    # (what the file says, what the finding names) : rules JSON Schema cannot say, found by config.problems
    (b"analysis:\n  metrics:\n    error_rate: {type: rate, max_ratio: 1, min_delta: 0}\n",
     "analysis.metrics.error_rate tolerates nothing"),
    (b"analysis:\n  metrics:\n    p95: {type: gauge, action: rollback}\n", "a gauge can alert but never roll back"),
    (b"analysis:\n  metrics:\n    mystery: {max_ratio: 2}\n", "analysis.metrics.mystery.type must be one of"),
    (b"gate:\n  metrics:\n    accuracy: {better: higher, max_drop: 0.01, max_ratio: 1.1}\n",
     "gate.metrics.accuracy: give exactly one of max_drop, max_rise, max_ratio"),
    (b"gate:\n  metrics:\n    accuracy: {better: lower, max_drop: 0.01}\n", "max_drop does not fit better: lower"),
]


@pytest.mark.parametrize("text, finding", BROKEN_RULES)
def test_rules_beyond_the_schema_are_found_when_the_file_is_loaded_with_their_line(text, finding):
    with pytest.raises(ModelctlError) as err:
        configmod.parse(MINIMAL + text)
    message = str(err.value)
    assert finding in message and "\n" not in message
    assert "modelctl.yaml:5:" in message  # the line of the offending entry, as `check` prints it


@pytest.mark.parametrize("text, finding", BROKEN_RULES[:1] + BROKEN_RULES[3:4])
def test_a_write_refuses_such_a_file_up_front_and_check_names_it(registry, write_bundle, text, finding):
    (registry / "modelctl.yaml").write_bytes(MINIMAL + text)
    git(registry, "commit", "-q", "-am", "a rule broken by hand")
    before = repo_state(registry)
    out = run_cli("register", str(write_bundle(version="1.0.0")), cwd=registry)
    assert out.returncode == 2 and finding in out.stderr and "Traceback" not in out.stderr
    assert repo_state(registry) == before  # nothing written
    out = run_cli("check", cwd=registry)
    assert out.returncode == 1 and finding in out.stdout
