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
