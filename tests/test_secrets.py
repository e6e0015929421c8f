"""The secret scanner: every supported kind is found and redacted; references and hashes pass."""
from __future__ import annotations

import hashlib
import random
import string

import pytest

from modelctl.secrets import redact, scan_text

# Fake keys are generated at run time so this file holds nothing a secret scanner would flag.
_rng = random.Random(20260420)
B62 = string.ascii_letters + string.digits


def rnd(n, alphabet=B62):
    # real keys are random: make sure each fake has every character class its alphabet offers
    classes = [cls for cls in (str.isupper, str.islower, str.isdigit) if any(cls(c) for c in alphabet)]
    for _ in range(1000):
        value = "".join(_rng.choice(alphabet) for _ in range(n))
        if all(any(cls(c) for c in value) for cls in classes):
            return value
    raise AssertionError("could not generate a fake key")


FAKES = {
    "openai-api-key": [
        "sk-" + rnd(48),
        "sk-proj-" + rnd(74) + "_" + rnd(20) + "-" + rnd(60),
        "sk-svcacct-" + rnd(60),
    ],
    "anthropic-api-key": ["sk-ant-api03-" + rnd(93) + "AA", "sk-ant-admin01-" + rnd(80)],
    "aws-access-key-id": ["AKIA" + rnd(16, string.ascii_uppercase + "234567"), "ASIA" + rnd(16, string.ascii_uppercase + "234567")],
    "huggingface-token": ["hf_" + rnd(34, string.ascii_letters)],
    "github-token": [p + rnd(36) for p in ("ghp_", "gho_", "ghu_", "ghs_", "ghr_")]
    + ["github_pat_" + rnd(22) + "_" + rnd(59)],
}


@pytest.mark.parametrize(
    "kind,value", [(kind, value) for kind, values in FAKES.items() for value in values]
)
def test_each_kind_is_found_with_line_and_redacted(kind, value):
    text = f"apiVersion: modelctl/v1\nkind: Bundle\nconfig:\n  api_key: {value}\n"
    findings = scan_text(text, "bundles/x/1.0.0.yaml")
    assert len(findings) == 1
    f = findings[0]
    assert (f.path, f.line, f.column, f.kind) == ("bundles/x/1.0.0.yaml", 4, 12, kind)
    assert f.redacted == f"{value[:4]}…({len(value)} chars)"
    assert value not in repr(f) and value not in str(f.to_dict())


@pytest.mark.parametrize(
    "line",
    [
        "aws_secret_access_key: {key}",
        "AWS_SECRET_ACCESS_KEY={key}",
        '"SecretAccessKey": "{key}"',
        "secretAccessKey: '{key}'",
    ],
)
def test_aws_secret_key_in_a_secret_field_is_found(line):
    key = rnd(40, B62 + "/+")
    findings = scan_text("creds:\n  " + line.format(key=key) + "\n", "modelctl.yaml")
    assert [(f.kind, f.line) for f in findings] == [("aws-secret-access-key", 2)]
    assert key not in str(findings)


def test_a_40_character_value_outside_a_secret_field_is_not_an_aws_key():
    assert scan_text(f"prompt_id: {rnd(40)}\n", "x.yaml") == []


def _pem(kind="RSA "):
    body = "\n".join("  " + rnd(64, B62 + "+/") for _ in range(5))
    return f"-----BEGIN {kind}PRIVATE KEY-----\n{body}\n  -----END {kind}PRIVATE KEY-----"


@pytest.mark.parametrize("kind", ["", "RSA ", "EC ", "OPENSSH ", "ENCRYPTED "])
def test_pem_private_key_block_in_a_literal_scalar_is_found(kind):
    block = _pem(kind)
    text = f"name: x\ntls:\n  key: |\n    {block}\n"
    findings = scan_text(text, "deployments/x.yaml")
    assert [(f.kind, f.line, f.column) for f in findings] == [("private-key", 4, 5)]
    assert findings[0].redacted == f"----…({len(block)} chars)"


def test_pem_block_in_a_quoted_string_with_escaped_newlines_is_found():
    text = f'key: "-----BEGIN PRIVATE KEY-----\\n{rnd(64, B62 + "+/")}\\n-----END PRIVATE KEY-----\\n"\n'
    assert [f.kind for f in scan_text(text, "x.yaml")] == ["private-key"]


def test_public_keys_and_a_bare_header_in_prose_are_not_flagged():
    text = (
        f"pub: |\n  -----BEGIN PUBLIC KEY-----\n  {rnd(64, B62 + '+/')}\n  -----END PUBLIC KEY-----\n"
        "note: never print a line like -----BEGIN PRIVATE KEY----- to the user.\n"
    )
    assert scan_text(text, "prompts/p.yaml") == []


def test_references_pass():
    text = "\n".join([
        "env:",
        "  - name: OPENAI_API_KEY",
        "    valueFrom: {secretKeyRef: {name: openai, key: api-key}}",
        "apiKey:",
        "  secretRef: {name: openai-prod, key: OPENAI_API_KEY}",
        "token: ${HF_TOKEN}",
        "github_token: $GITHUB_TOKEN",
        "aws_secret_access_key: ${AWS_SECRET_ACCESS_KEY}",
        "aws_secret_access_key_env: AWS_SECRET_ACCESS_KEY",
        "token_env: ANTHROPIC_API_KEY",
        "",
    ])
    assert scan_text(text, "modelctl.yaml") == []


def test_hashes_identifiers_and_placeholders_pass():
    digest = hashlib.sha256(b"prompt").hexdigest()
    text = "\n".join([
        f"sha256: {digest}",
        f"commit: sk-{digest}",
        f"blob: {hashlib.sha1(b'x').hexdigest()}",
        "api_key: sk-XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
        "api_key: sk-your-openai-key-goes-here-please",
        "pkg: scikit-learn is sk-learn-compatible-with-everything",
        "model: hf_transformersautomodelforcausallm",
        "aws: AKIAIOSFODNN7EXAMPLE",
        "aws_secret_access_key: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "id: ghp_short",
        "run: my-sk-" + rnd(48),
        "",
    ])
    assert scan_text(text, "x.yaml") == []


def test_several_secrets_are_reported_in_file_order():
    text = "\n".join([
        "a: " + FAKES["github-token"][0],
        "b: ok",
        "c: " + FAKES["openai-api-key"][0] + " " + FAKES["huggingface-token"][0],
    ])
    findings = scan_text(text, "f.yaml")
    assert [(f.line, f.kind) for f in findings] == [
        (1, "github-token"), (3, "openai-api-key"), (3, "huggingface-token"),
    ]
    assert findings[2].column == 4 + len(FAKES["openai-api-key"][0]) + 1


def test_non_ascii_text_keeps_positions():
    key = rnd(40, B62 + "/+")
    text = "title: İstanbul ünïcödé\naws_secret_access_key: " + key + "\n"
    findings = scan_text(text, "x.yaml")
    assert [(f.kind, f.line, f.column) for f in findings] == [("aws-secret-access-key", 2, 24)]


def test_redact_never_shows_more_than_four_characters():
    assert redact("sk-abcdefghij") == "sk-a…(13 chars)"
    assert redact("ab") == "ab…(2 chars)"


def test_messages_name_the_kind_for_humans():
    f = scan_text("k: " + FAKES["anthropic-api-key"][0], "x.yaml")[0]
    assert f.message.startswith("Anthropic API key sk-a…(")
    assert f.to_dict()["message"] == f.message and f.to_dict()["line"] == 1


@pytest.mark.parametrize("text, kind", [
    ("token: xoxb-123456789012-1234567890123-aB3dE5fG7hJ9kL1mN2pQ4rS6\n", "slack-token"),
    ("key: AIzaSyA1234567890abcdefghijklmnopqrstu\n", "google-api-key"),
    ("reason: sk-proj-\u200baB3dE5fG7hJ9kL1mN2pQ4rS6tU8vW0xY2zA4bC6d\n", "openai-api-key"),
])
def test_more_key_kinds_and_keys_split_by_invisible_characters(text, kind):
    found = scan_text("a: 1\n" + text, "f.yaml")
    assert [(f.kind, f.line) for f in found] == [(kind, 2)]


# -- the keys most likely in an LLM registry (issue 11) -------------------------------------------

HEX = "0123456789abcdef"
LOWER_ALNUM = string.ascii_lowercase + string.digits


def _jwt():
    import base64
    import json

    def part(obj):
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")
    return part({"alg": "HS256", "typ": "JWT"}) + "." + part({"sub": "user-42", "iat": 1760000000}) + "." + rnd(43)


MORE_FAKES = [
    ("openrouter-api-key", "api_key: {}", "sk-or-v1-" + rnd(64, HEX)),
    ("deepseek-api-key", "api_key: {}", "sk-" + rnd(32, HEX)),
    ("groq-api-key", "api_key: {}", "gsk_" + rnd(52)),
    ("xai-api-key", "api_key: {}", "xai-" + rnd(80)),
    ("perplexity-api-key", "api_key: {}", "pplx-" + rnd(48, LOWER_ALNUM)),
    ("replicate-token", "token: {}", "r8_" + rnd(37)),
    ("pinecone-api-key", "api_key: {}", "pcsk_" + rnd(6) + "_" + rnd(63)),
    ("langsmith-api-key", "api_key: {}", "lsv2_pt_" + rnd(32, HEX) + "_" + rnd(10, HEX)),
    ("langsmith-api-key", "api_key: {}", "lsv2_sk_" + rnd(32, HEX) + "_" + rnd(10, HEX)),
    ("langfuse-secret-key", "secret_key: {}", "sk-lf-" + "-".join(rnd(n, HEX) for n in (8, 4, 4, 4, 12))),
    ("azure-openai-key", "api_key: {}", rnd(32, HEX)),
    ("azure-openai-key", "api-key: '{}'", rnd(32, HEX)),
    ("azure-openai-key", "AZURE_OPENAI_API_KEY={}", rnd(32, HEX)),
    ("azure-openai-key", '"key": "{}"', rnd(32, HEX)),
    ("azure-openai-key", "client_secret: {}", rnd(32, HEX)),
    ("azure-openai-key", "token: {}", rnd(32, HEX).upper()),
    ("stripe-key", "stripe: {}", "sk_live_" + rnd(99)),
    ("stripe-key", "stripe: {}", "rk_live_" + rnd(99)),
    ("stripe-key", "stripe: {}", "sk_test_" + rnd(24)),
    ("slack-webhook", "alerts: {}",
     "https://hooks.slack.com/services/T" + rnd(8, string.ascii_uppercase + "0123456789") + "/B"
     + rnd(10, string.ascii_uppercase + "0123456789") + "/" + rnd(24)),
    ("jwt", "authorization: Bearer {}", _jwt()),
    ("url-credentials", "url: {}/metrics", "https://svc:" + rnd(20) + "@prometheus.example.com"),
    ("url-credentials", "dsn: {}", "postgres://admin:" + rnd(16) + "@db.internal:5432/registry"),
]


@pytest.mark.parametrize("kind,template,value", MORE_FAKES, ids=[f"{k}-{i}" for i, (k, _, _) in enumerate(MORE_FAKES)])
def test_llm_registry_key_kinds_are_found_and_redacted(kind, template, value):
    text = "name: x\nconfig:\n  " + template.format(value) + "\n"
    findings = scan_text(text, "bundles/x/1.0.0.yaml")
    assert [(f.kind, f.line) for f in findings] == [(kind, 3)]
    secret = value.split("://", 1)[-1].split(":", 1)[-1].split("@")[0] if kind == "url-credentials" else value
    assert secret not in str(findings[0].to_dict())
    assert secret[4:] not in findings[0].message


def test_url_credentials_redaction_hides_the_whole_password():
    password = rnd(20)
    f = scan_text(f"url: https://svc:{password}@metrics.example.com/q\n", "modelctl.yaml")[0]
    assert f.redacted.startswith("http…(") and password[:4] not in f.redacted


@pytest.mark.parametrize("line", [
    "sha256: " + hashlib.sha256(b"prompt").hexdigest(),
    "prompt_sha256: sk-" + hashlib.sha256(b"x").hexdigest(),
    "data_key: " + hashlib.sha256(b"data").hexdigest(),
    "commit: " + hashlib.sha1(b"x").hexdigest(),
    "token: " + hashlib.sha1(b"x").hexdigest(),
    "run_id: 3f2b8c1e-9a4d-4e7b-8c2a-1d5e6f7a8b9c",
    "key: 3f2b8c1e-9a4d-4e7b-8c2a-1d5e6f7a8b9c",
    "md5: " + hashlib.md5(b"x").hexdigest(),
    "cache: " + hashlib.md5(b"x").hexdigest(),
    "api_key: " + "0" * 32,
    "api_key: " + "abcdef" * 6,
    "stripe: sk_test_XXXXXXXXXXXXXXXXXXXXXXXX",
    "url: https://user:${METRICS_PASSWORD}@prom.example.com",
    "url: postgres://user:password@localhost/db",
    "url: https://user:<password>@host.example.com",
    "url: https://prom.example.com/api/v1/query?q=a:b",
    "hook: https://hooks.slack.com/services/TXXXXXXXX/BXXXXXXXX/XXXXXXXXXXXXXXXXXXXXXXXX",
    "note: eyJhbGciOiJub25lIn0 is a header alone",
    "pk: pk-lf-" + "-".join(hashlib.sha256(b"y").hexdigest()[:n] for n in (8, 4, 4, 4, 12)),
])
def test_digests_uuids_and_placeholders_are_not_llm_keys(line):
    assert scan_text(line + "\n", "bundles/x/1.0.0.yaml") == []


def test_a_registered_bundle_with_prompt_and_data_hashes_is_clean():
    text = "\n".join([
        "apiVersion: modelctl/v1", "kind: Bundle", "name: support-agent", 'version: "2.4.0"',
        "model: {provider: openai, id: gpt-4.1-mini-2025-04-14}",
        "prompt:", "  template: prompts/support.txt", "  sha256: " + hashlib.sha256(b"p").hexdigest(),
        "data:", "  dataset: s3://bucket/evals.jsonl", "  sha256: " + hashlib.sha256(b"d").hexdigest(),
        "  version_key: " + hashlib.sha256(b"v").hexdigest(), "",
    ])
    assert scan_text(text, "bundles/support-agent/2.4.0.yaml") == []


def test_redact_text_replaces_every_secret_and_keeps_the_rest():
    from modelctl.secrets import redact_text, shown

    a, b = "gsk_" + rnd(52), "sk-proj-" + rnd(60)
    text = f"unknown field(s) ({a!r} was unexpected) and {b}"
    out = redact_text(text)
    assert a not in out and b not in out and a[4:12] not in out
    assert out.startswith("unknown field(s) ('gsk_…(56 chars)' was unexpected) and sk-p…(")
    assert redact_text("gpt-4o") == "gpt-4o"
    assert shown("gpt-4o\n") == "'gpt-4o\\n'"
    assert b[4:] not in shown(b) and len(shown("x" * 500)) == 60
    url = "https://x-access-token:ghs_" + rnd(36) + "@github.com/o/r"
    assert "ghs_" not in redact_text(url) and redact_text(url).endswith("github.com/o/r")
