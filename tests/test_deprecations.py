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
