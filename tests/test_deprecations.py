"""Retirement dates: past retirement is an error, within warn_days a warning."""
from __future__ import annotations

import datetime as dt

import pytest

from modelctl.deprecations import check_bundle, parse_deprecations, pins_of_bundle
from modelctl.errors import ValidationError

TODAY = dt.date(2026, 5, 1)

TABLE = parse_deprecations({
    "apiVersion": "modelctl/v1",
    "kind": "Deprecations",
    "models": {
        "openai/gpt-4-0613": "2026-04-30",
        "anthropic/claude-3-opus-20240229": {
            "retires": "2026-05-20",
            "replacement": "anthropic/claude-opus-4-1-20250805",
            "note": "see the provider's deprecation page",
        },
        "gpt-3.5-turbo-*": dt.date(2026, 9, 30),
    },
})


def bundle(provider, model_id, fallbacks=()):
    return {
        "apiVersion": "modelctl/v1",
        "kind": "Bundle",
        "name": "support-agent",
        "version": "2.4.0",
        "model": {"provider": provider, "id": model_id},
        "fallbacks": [{"provider": p, "id": i} for p, i in fallbacks],
    }


def check(b, today=TODAY, warn_days=30, table=TABLE):
    return check_bundle(b, "bundles/support-agent/2.4.0.yaml", table, today=today, warn_days=warn_days)


def test_model_past_retirement_is_an_error():
    [f] = check(bundle("openai", "gpt-4-0613"))
    assert (f.file, f.field, f.severity) == ("bundles/support-agent/2.4.0.yaml", "model.id", "error")
    assert f.message.startswith("model.id: openai/gpt-4-0613 was retired on 2026-04-30 (1 day ago)")
    assert f.retires == "2026-04-30" and f.model == "openai/gpt-4-0613"


def test_retirement_day_itself_is_an_error():
    [f] = check(bundle("openai", "gpt-4-0613"), today=dt.date(2026, 4, 30))
    assert f.severity == "error" and "(today)" in f.message


def test_within_warn_days_is_a_warning_with_the_replacement():
    [f] = check(bundle("anthropic", "claude-3-opus-20240229"))
    assert f.severity == "warning"
    assert "retires on 2026-05-20 (in 19 days)" in f.message
    assert "move to anthropic/claude-opus-4-1-20250805" in f.message
    assert f.replacement == "anthropic/claude-opus-4-1-20250805"


def test_beyond_warn_days_is_silent_and_warn_days_is_honoured():
    b = bundle("anthropic", "claude-3-opus-20240229")
    assert check(b, warn_days=18) == []
    assert [f.severity for f in check(b, warn_days=19)] == ["warning"]


def test_other_models_and_other_providers_are_not_matched():
    assert check(bundle("openai", "gpt-4.1-mini-2025-04-14")) == []
    assert check(bundle("azure", "gpt-4-0613")) == []  # the entry names openai/gpt-4-0613


def test_bare_id_and_wildcard_match_any_provider():
    table = parse_deprecations({"models": {"llama-2-70b": "2026-01-01"}})
    assert [f.severity for f in check(bundle("together", "llama-2-70b"), table=table)] == ["error"]
    # the glob entry in TABLE retires 2026-09-30: warned about 30 days before
    [f] = check(bundle("azure", "gpt-3.5-turbo-0125"), today=dt.date(2026, 9, 1))
    assert f.severity == "warning" and f.model == "azure/gpt-3.5-turbo-0125"


def test_ids_containing_a_slash_match_as_written():
    table = parse_deprecations({"models": {"huggingface/meta-llama/Llama-2-7b-hf": "2026-01-01",
                                           "mistralai/Mistral-7B-v0.1": "2026-01-01"}})
    assert len(check(bundle("huggingface", "meta-llama/Llama-2-7b-hf"), table=table)) == 1
    assert len(check(bundle("vllm", "mistralai/Mistral-7B-v0.1"), table=table)) == 1


def test_fallbacks_are_checked_with_their_field():
    b = bundle("openai", "gpt-4.1-2025-04-14", fallbacks=[("anthropic", "claude-sonnet-4-5-20250929"),
                                                         ("openai", "gpt-4-0613")])
    [f] = check(b)
    assert f.field == "fallbacks[1].id" and f.severity == "error"


def test_earliest_matching_retirement_wins():
    table = parse_deprecations({"models": {"openai/gpt-4-*": "2027-01-01", "gpt-4-0613": "2026-04-01"}})
    [f] = check(bundle("openai", "gpt-4-0613"), table=table)
    assert f.retires == "2026-04-01" and f.severity == "error"


def test_plain_mapping_without_models_wrapper_is_accepted():
    table = parse_deprecations({"openai/gpt-4-0613": "2026-04-30"})
    assert [f.severity for f in check(bundle("openai", "gpt-4-0613"), table=table)] == ["error"]


def test_empty_or_missing_file_means_nothing_is_deprecated():
    assert parse_deprecations(None) == []
    assert parse_deprecations({"models": None}) == []


@pytest.mark.parametrize(
    "data,where",
    [
        ({"models": {"openai/gpt-4": "June 2026"}}, "models.openai/gpt-4"),
        ({"models": {"openai/gpt-4": "2026-13-01"}}, "models.openai/gpt-4"),
        ({"models": {"openai/gpt-4": {"replacement": "x"}}}, "retires is missing"),
        ({"models": {"openai/gpt-4": {"retires": "2026-01-01", "replace": "x"}}}, "unknown key 'replace'"),
        ({"models": {"openai/gpt-4": "2026-01-01"}, "extra": 1}, "unknown key 'extra'"),
        ({"models": ["openai/gpt-4"]}, "models: expected a mapping"),
        (["openai/gpt-4"], "expected a mapping"),
    ],
)
def test_malformed_files_are_refused_with_the_place(data, where):
    with pytest.raises(ValidationError, match="deprecations.yaml") as err:
        parse_deprecations(data)
    assert where in str(err.value)


@pytest.mark.parametrize("warn_days", [-1, 1.5, True])
def test_bad_warn_days_is_refused(warn_days):
    with pytest.raises(ValidationError, match="warn_days"):
        check(bundle("openai", "gpt-4-0613"), warn_days=warn_days)


def test_pins_of_bundle_lists_model_and_fallbacks():
    pins = pins_of_bundle(bundle("openai", "a", fallbacks=[("anthropic", "b")]))
    assert [(p.field, p.provider, p.id) for p in pins] == [("model.id", "openai", "a"), ("fallbacks[0].id", "anthropic", "b")]


def test_findings_serialise_with_stable_keys():
    [f] = check(bundle("openai", "gpt-4-0613"))
    assert set(f.to_dict()) == {"file", "line", "field", "severity", "message", "model", "retires", "replacement"}


# -- the shipped list, deprecations.yaml over it, and `modelctl deprecations` ----------------------

def test_the_shipped_list_parses_and_every_entry_cites_its_source():
    from modelctl.deprecations import shipped

    entries = shipped()
    assert len(entries) >= 5
    for entry in entries:
        assert entry.source and entry.source.startswith("https://"), entry.pattern
        assert entry.origin == "retirements.yaml" and "/" in entry.pattern


def test_deprecations_yaml_extends_the_shipped_list_and_overrides_an_entry_with_the_same_key():
    from modelctl.deprecations import combine

    base = parse_deprecations({"openai/a": "2026-01-01", "openai/b": "2026-02-01"}, "retirements.yaml")
    own = parse_deprecations({"openai/b": "2027-02-01", "openai/c": "2026-03-01"})
    table = {r.pattern: (r.retires.isoformat(), r.origin) for r in combine(base, own)}
    assert table == {"openai/a": ("2026-01-01", "retirements.yaml"), "openai/b": ("2027-02-01", "deprecations.yaml"),
                     "openai/c": ("2026-03-01", "deprecations.yaml")}


def test_plan_lists_each_retiring_model_with_the_versions_on_a_route_and_the_day_to_start_evaluating():
    from modelctl.deprecations import plan

    table = parse_deprecations({"openai/gpt-4-0613": {"retires": "2026-06-30", "replacement": "openai/gpt-4.1"},
                                "anthropic/claude-3-opus-20240229": "2026-04-01"})
    old = bundle("openai", "gpt-4-0613", fallbacks=[("anthropic", "claude-3-opus-20240229")])
    bundles = {("a", "1.0.0"): old, ("a", "0.9.0"): old, ("b", "2.0.0"): old}
    statuses = {"a": {"1.0.0": "active", "0.9.0": "deprecated"}, "b": {"2.0.0": "canary"}}
    rows = plan(bundles, statuses, table, today=TODAY, warn_days=90, on_route=("active", "canary"))
    assert [(p.model, p.state, p.days_left, p.evaluate_from.isoformat()) for p in rows] == [
        ("anthropic/claude-3-opus-20240229", "retired", -30, "2026-01-01"),
        ("openai/gpt-4-0613", "warning", 60, "2026-04-01"),
    ]
    assert [(u.name, u.version, u.status, u.field) for u in rows[0].uses] == \
        [("a", "1.0.0", "active", "fallbacks[0].id"), ("b", "2.0.0", "canary", "fallbacks[0].id")]
    assert rows[1].replacement == "openai/gpt-4.1"
    assert plan(bundles, statuses, table, today=dt.date(2025, 1, 1), warn_days=90,
                on_route=("active",))[1].state == "planned"


@pytest.fixture
def gpt5(registry, tmp_path):
    """support-agent 1.0.0 active, pinned to openai/gpt-5-2025-08-07 (the shipped list: retires 2026-12-11),
    with a fallback to anthropic/claude-sonnet-4-5-20250929."""
    from evalkit import configure, promote, register

    configure(registry, pipeline=[])
    register(registry, tmp_path, "1.0.0", model_id="gpt-5-2025-08-07", fallbacks=True)
    promote(registry, "1.0.0")
    return registry


def _check(repo, today):
    import json

    from conftest import run_cli

    proc = run_cli("check", "--json", cwd=repo, env={"MODELCTL_TODAY": today})
    found = [f for f in json.loads(proc.stdout)["findings"] if "retire" in f["message"]]
    return proc.returncode, found


def test_check_warns_90_days_before_a_shipped_retirement_and_errors_from_the_day(gpt5):
    assert _check(gpt5, "2026-09-11") == (0, [])  # 91 days before
    code, [found] = _check(gpt5, "2026-09-12")
    assert code == 0 and found["level"] == "warning" and found["path"] == "bundles/support-agent/1.0.0.yaml"
    assert ("model.id: openai/gpt-5-2025-08-07 retires on 2026-12-11 (in 90 days); move to openai/gpt-6.1-sol "
            "(https://developers.openai.com/api/docs/deprecations)") in found["message"]
    code, [found] = _check(gpt5, "2026-12-11")
    assert code == 1 and found["level"] == "error" and "was retired on 2026-12-11 (today)" in found["message"]


def test_the_registry_overrides_the_shipped_date_and_adds_a_fallback_and_deprecations_lists_both(gpt5):
    import json

    from conftest import git, run_cli

    (gpt5 / "deprecations.yaml").write_text(
        "models:\n  openai/gpt-5-2025-08-07: \"2027-03-01\"\n"
        "  anthropic/claude-sonnet-4-5-20250929:\n    retires: \"2026-10-01\"\n"
        "    replacement: anthropic/claude-sonnet-4-6\n")
    text = (gpt5 / "modelctl.yaml").read_text().replace("warn_days: 90", "warn_days: 60")
    (gpt5 / "modelctl.yaml").write_text(text)
    git(gpt5, "add", "-A")
    git(gpt5, "commit", "-q", "-m", "our dates")
    code, found = _check(gpt5, "2026-09-12")
    assert code == 0 and [f["message"].split(": ", 1)[1].split(";")[0] for f in found] == \
        ["fallbacks[0].id: anthropic/claude-sonnet-4-5-20250929 retires on 2026-10-01 (in 19 days)"]
    proc = run_cli("deprecations", "--json", "--today", "2026-09-12", cwd=gpt5)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    from test_output_schemas import assert_valid

    assert_valid("deprecations", doc)
    assert (doc["today"], doc["warn_days"]) == ("2026-09-12", 60)
    assert [(m["model"], m["retires"], m["state"], m["evaluate_from"], m["replacement"], m["listed_in"])
            for m in doc["models"]] == [
        ("anthropic/claude-sonnet-4-5-20250929", "2026-10-01", "warning", "2026-08-02", "anthropic/claude-sonnet-4-6",
         "deprecations.yaml"),
        ("openai/gpt-5-2025-08-07", "2027-03-01", "planned", "2026-12-31", None, "deprecations.yaml"),
    ]
    assert doc["models"][0]["versions"] == [{"name": "support-agent", "version": "1.0.0", "status": "active",
                                             "field": "fallbacks[0].id"}]
    table = run_cli("deprecations", cwd=gpt5, env={"MODELCTL_TODAY": "2026-09-12"}).stdout
    assert "anthropic/claude-sonnet-4-6" in table and "2026-08-02" in table and "support-agent 1.0.0 (active, fallback)" in table


def test_a_bad_injected_day_is_refused(gpt5):
    from conftest import run_cli

    for args, env in ((["--today", "soon"], None), ([], {"MODELCTL_TODAY": "13/01/2026"})):
        proc = run_cli("deprecations", *args, cwd=gpt5, env=env)
        assert proc.returncode == 2 and proc.stderr.startswith("error: invalid "), proc.stderr
