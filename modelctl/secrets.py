"""Find provider API keys and private keys in text before it becomes a git object (pure).

What is found (`Finding.kind`):

- `openai-api-key`       sk-..., sk-proj-..., sk-svcacct-..., sk-admin-...
- `anthropic-api-key`    sk-ant-...
- `aws-access-key-id`    AKIA/ASIA + 16 upper-case letters or digits
- `aws-secret-access-key` a 40-character key in an aws_secret_access_key-like field
- `huggingface-token`    hf_...
- `github-token`         ghp_, gho_, ghu_, ghs_, ghr_, github_pat_
- `private-key`          a PEM block -----BEGIN ... PRIVATE KEY----- with a body
- `slack-token`          xoxb-, xoxp-, xoxa-, xoxr-, xoxs-, xoxe- tokens
- `google-api-key`       AIza + 35 characters
- `openrouter-api-key`   sk-or-v1- + 64 hex
- `deepseek-api-key`     sk- + 32 lower-case hex
- `groq-api-key`         gsk_...
- `xai-api-key`          xai-...
- `perplexity-api-key`   pplx-...
- `replicate-token`      r8_...
- `pinecone-api-key`     pcsk_...
- `langsmith-api-key`    lsv2_pt_... and lsv2_sk_...
- `langfuse-secret-key`  sk-lf- + a UUID
- `azure-openai-key`     32 hex characters under a key-like name (api_key, api-key, key, secret, token...)
- `stripe-key`           sk_live_, rk_live_, sk_test_, rk_test_...
- `slack-webhook`        https://hooks.slack.com/services/T.../B.../...
- `jwt`                  three base64url parts whose first decodes to a JSON header with "alg"
- `url-credentials`      scheme://user:password@host (the whole prefix is redacted)

What passes: references (`secretRef:` values, `${ENV}`, `$ENV`, `*_env: NAME`) never look like a
key, and every token must look random (upper and lower case letters, and a digit where the format
guarantees one), so hex digests, identifiers, docs placeholders (sk-XXXX..., AWS's ...EXAMPLE keys)
and prose do not match; sha256 values (64 hex), git shas (40 hex) and UUIDs are never a key on their
own. The secret itself never leaves this module: findings carry only `redact()`, and every message
that echoes a user value passes it through `redact_text()` or `shown()` first.
"""
from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

KIND_LABELS = {
    "openai-api-key": "OpenAI API key",
    "anthropic-api-key": "Anthropic API key",
    "aws-access-key-id": "AWS access key id",
    "aws-secret-access-key": "AWS secret access key",
    "huggingface-token": "Hugging Face token",
    "github-token": "GitHub token",
    "private-key": "private key",
    "slack-token": "Slack token",
    "google-api-key": "Google API key",
    "openrouter-api-key": "OpenRouter API key",
    "deepseek-api-key": "DeepSeek API key",
    "groq-api-key": "Groq API key",
    "xai-api-key": "xAI API key",
    "perplexity-api-key": "Perplexity API key",
    "replicate-token": "Replicate API token",
    "pinecone-api-key": "Pinecone API key",
    "langsmith-api-key": "LangSmith API key",
    "langfuse-secret-key": "Langfuse secret key",
    "azure-openai-key": "Azure OpenAI key",
    "stripe-key": "Stripe key",
    "slack-webhook": "Slack webhook URL",
    "jwt": "JSON Web Token",
    "url-credentials": "password in a URL",
}


@dataclass(frozen=True)
class Finding:
    """One secret: where it is and what kind, with the value redacted."""

    path: str
    line: int  # 1-based
    column: int  # 1-based
    kind: str  # a key of KIND_LABELS
    redacted: str

    @property
    def message(self) -> str:
        """One line for humans: 'OpenAI API key sk-p…(164 chars)'."""
        return f"{KIND_LABELS.get(self.kind, self.kind)} {self.redacted}"

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON output."""
        return {**asdict(self), "message": self.message}


def redact(value: str) -> str:
    """First 4 characters, an ellipsis and the length: never the secret itself."""
    return f"{value[:4]}…({len(value)} chars)"


_TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_HAS_UPPER = re.compile(r"[A-Z]")
_HAS_LOWER = re.compile(r"[a-z]")
_HAS_DIGIT = re.compile(r"[0-9]")


def _mixed(value: str, digit: bool = False) -> bool:
    ok = bool(_HAS_UPPER.search(value) and _HAS_LOWER.search(value))
    return ok and (not digit or bool(_HAS_DIGIT.search(value)))


def _starts_token(text: str, start: int) -> bool:
    # a key glued to a longer identifier (my-sk-...) is part of something else
    return start == 0 or text[start - 1] not in _TOKEN_CHARS


def _hex_mixed(value: str) -> bool:
    return bool(re.search(r"[a-f]", value) and _HAS_DIGIT.search(value))


def _alnum_mixed(value: str) -> bool:
    return bool((_HAS_UPPER.search(value) or _HAS_LOWER.search(value)) and _HAS_DIGIT.search(value))


def _jwt_header(part: str) -> bool:
    try:
        header = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return False
    return isinstance(header, dict) and "alg" in header


# what docs and templates write where a password goes: references and placeholders, not secrets
_PLACEHOLDER = re.compile(r"(?i:\$.*|\{\{.*|%\(?.*|<.*|\*+|x+|\.+|pass(word)?|secret|changeme|password123|pwd|token)")


def _real_password(value: str) -> bool:
    return not _PLACEHOLDER.fullmatch(value)


_PEM_END = re.compile(r"-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----")
_PEM_BODY = re.compile(r"(?:\\[nr]|[\s\"'|>-])*(?:Proc-Type:|[A-Za-z0-9+/=]{40,})")


# Each detector: (kind, pattern whose group 1 is the secret, extra check). Patterns begin with a
# literal so the regex engine can skip ahead quickly; word boundaries are checked in Python.
_Check = Callable[[str, "re.Match[str]"], bool]
_DETECTORS: list[tuple[str, re.Pattern[str], _Check]] = [
    (
        "anthropic-api-key",
        re.compile(r"(sk-ant-[A-Za-z0-9_-]{20,})"),
        lambda text, m: _starts_token(text, m.start(1)) and _mixed(m.group(1)[7:], digit=True),
    ),
    (
        "openai-api-key",
        re.compile(r"(sk-(?!ant-|or-v1-|lf-)(?:(?:proj|svcacct|admin)-)?[A-Za-z0-9_-]{20,})"),
        lambda text, m: _starts_token(text, m.start(1)) and _mixed(m.group(1)[3:], digit=True),
    ),
    (
        "aws-access-key-id",
        re.compile(r"((?:AKIA|ASIA)[A-Z0-9]{16})(?![A-Za-z0-9])"),
        lambda text, m: (
            (m.start(1) == 0 or not text[m.start(1) - 1].isalnum())
            and not m.group(1).endswith("EXAMPLE")
        ),
    ),
    (
        "huggingface-token",
        re.compile(r"(hf_[A-Za-z0-9]{30,})(?![A-Za-z0-9_])"),
        lambda text, m: _starts_token(text, m.start(1)) and _mixed(m.group(1)[3:]),
    ),
    (
        "github-token",
        re.compile(r"(gh[pousr]_[A-Za-z0-9]{36,251})(?![A-Za-z0-9_])"),
        lambda text, m: _starts_token(text, m.start(1)) and _mixed(m.group(1)[4:]),
    ),
    (
        "github-token",
        re.compile(r"(github_pat_[A-Za-z0-9_]{50,})(?![A-Za-z0-9_])"),
        lambda text, m: _starts_token(text, m.start(1)) and _mixed(m.group(1)[11:]),
    ),
    (
        "slack-token",
        re.compile(r"(xox[abeprs]-[0-9]{6,}-[A-Za-z0-9-]{10,})(?![A-Za-z0-9_-])"),
        lambda text, m: _starts_token(text, m.start(1)),
    ),
    (
        "google-api-key",
        re.compile(r"(AIza[0-9A-Za-z_-]{30,40})(?![A-Za-z0-9_-])"),
        lambda text, m: _starts_token(text, m.start(1)) and _mixed(m.group(1)[4:]),
    ),
    (
        "openrouter-api-key",
        re.compile(r"(sk-or-v1-[0-9a-f]{64})(?![A-Za-z0-9_-])"),
        lambda text, m: _starts_token(text, m.start(1)) and _hex_mixed(m.group(1)[9:]),
    ),
    (
        # exactly 32 lower-case hex: a sha256 (64) or git sha (40) after "sk-" is not one
        "deepseek-api-key",
        re.compile(r"(sk-[0-9a-f]{32})(?![A-Za-z0-9_-])"),
        lambda text, m: _starts_token(text, m.start(1)) and _hex_mixed(m.group(1)[3:]),
    ),
    (
        "groq-api-key",
        re.compile(r"(gsk_[A-Za-z0-9]{40,64})(?![A-Za-z0-9_])"),
        lambda text, m: _starts_token(text, m.start(1)) and _mixed(m.group(1)[4:], digit=True),
    ),
    (
        "xai-api-key",
        re.compile(r"(xai-[A-Za-z0-9]{60,100})(?![A-Za-z0-9_-])"),
        lambda text, m: _starts_token(text, m.start(1)) and _mixed(m.group(1)[4:], digit=True),
    ),
    (
        "perplexity-api-key",
        re.compile(r"(pplx-[A-Za-z0-9]{40,64})(?![A-Za-z0-9_-])"),
        lambda text, m: _starts_token(text, m.start(1)) and _alnum_mixed(m.group(1)[5:]),
    ),
    (
        "replicate-token",
        re.compile(r"(r8_[A-Za-z0-9]{37})(?![A-Za-z0-9_])"),
        lambda text, m: _starts_token(text, m.start(1)) and _mixed(m.group(1)[3:], digit=True),
    ),
    (
        "pinecone-api-key",
        re.compile(r"(pcsk_[A-Za-z0-9]{4,8}_[A-Za-z0-9]{50,80})(?![A-Za-z0-9_])"),
        lambda text, m: _starts_token(text, m.start(1)) and _alnum_mixed(m.group(1)[5:]),
    ),
    (
        "langsmith-api-key",
        re.compile(r"(lsv2_(?:pt|sk)_[0-9a-f]{32}_[0-9a-f]{10})(?![A-Za-z0-9_])"),
        lambda text, m: _starts_token(text, m.start(1)) and _hex_mixed(m.group(1)[8:]),
    ),
    (
        "langfuse-secret-key",
        re.compile(r"(sk-lf-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})(?![A-Za-z0-9_-])"),
        lambda text, m: _starts_token(text, m.start(1)) and _hex_mixed(m.group(1)[6:]),
    ),
    (
        "stripe-key",
        re.compile(r"((?:sk|rk)_(?:live|test)_[A-Za-z0-9]{20,247})(?![A-Za-z0-9_])"),
        lambda text, m: _starts_token(text, m.start(1)) and _mixed(m.group(1)[8:], digit=True),
    ),
    (
        "slack-webhook",
        re.compile(r"(https://hooks\.slack\.com/(?:services|workflows|triggers)/T[A-Z0-9]{6,}/[A-Z0-9]{6,}/[A-Za-z0-9]{16,})"),
        lambda text, m: _mixed(m.group(1).rsplit("/", 1)[1]),
    ),
    (
        "jwt",
        re.compile(r"(eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)"),
        lambda text, m: _starts_token(text, m.start(1)) and _jwt_header(m.group(1).split(".", 1)[0]),
    ),
    (
        "url-credentials",
        # the whole scheme://user:password@ prefix is the value, so a redaction shows no password
        re.compile(r"([A-Za-z][A-Za-z0-9+.-]{1,20}://[^\s:/@\"'<>]+:([^\s/@\"'<>]+)@)(?=[A-Za-z0-9\[])"),
        lambda text, m: _real_password(m.group(2)),
    ),
    (
        "private-key",
        re.compile(r"(-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----)"),
        # a header alone (prose about keys) is not a key; a base64 body or PEM header follows one
        lambda text, m: _PEM_BODY.match(text, m.end(1), m.end(1) + 400) is not None,
    ),
]


# A case-insensitive pattern cannot use the engine's fast literal search (10x slower on big files),
# so the field name is located with str.find on a lower-cased copy and matched in place.
_AWS_SECRET = re.compile(
    r"(?i:secret_?access_?key)[\"']?\s*[:=]\s*[\"']?([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])"
)


def _aws_secret_ok(m: re.Match[str]) -> bool:
    return _mixed(m.group(1)) and "EXAMPLE" not in m.group(1)


def _aws_secrets(text: str) -> list[tuple[int, str, str]]:
    if not text.isascii():
        # lower() may change the length of non-ASCII text, so positions would drift
        return [(m.start(1), "aws-secret-access-key", m.group(1))
                for m in _AWS_SECRET.finditer(text) if _aws_secret_ok(m)]
    found = []
    lowered = text.lower()
    pos = lowered.find("access")
    while pos != -1:
        for start in (pos - 7, pos - 6):  # "secret_access" or "secretaccess"
            m = _AWS_SECRET.match(text, start) if start >= 0 else None
            if m and _aws_secret_ok(m):
                found.append((m.start(1), "aws-secret-access-key", m.group(1)))
                break
        pos = lowered.find("access", pos + 6)
    return found


# Azure OpenAI keys are 32 hex characters with no prefix: only a key-like field name makes one a
# secret (an md5 digest or a UUID without dashes elsewhere is not).
_HEX32_VALUE = re.compile(r"[:=][ \t]*[\"']?([0-9a-fA-F]{32})(?![A-Za-z0-9_-])")
_FIELD_BEFORE = re.compile(r"([A-Za-z0-9_.-]+)[\"']?[ \t]*\Z")
_KEYLIKE_ENDINGS = ("key", "secret", "token", "password")


def _azure_keys(text: str) -> list[tuple[int, str, str]]:
    found = []
    for m in _HEX32_VALUE.finditer(text):
        field = _FIELD_BEFORE.search(text, max(0, m.start() - 80), m.start())
        if field is None:
            continue
        name = field.group(1).lower().replace("-", "_")
        if name.endswith(_KEYLIKE_ENDINGS) and _hex_mixed(m.group(1).lower()):
            found.append((m.start(1), "azure-openai-key", m.group(1)))
    return found


_INVISIBLE = re.compile("[\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")


def _found(text: str) -> list[tuple[int, str, str]]:
    """(start, kind, value) of every secret in `text` (invisible characters already dropped)."""
    found: list[tuple[int, str, str]] = _aws_secrets(text) + _azure_keys(text)
    for kind, pattern, check in _DETECTORS:
        for m in pattern.finditer(text):
            if not check(text, m):
                continue
            value = m.group(1)
            if kind == "private-key":
                end = _PEM_END.search(text, m.end(1))
                if end is not None:
                    value = text[m.start(1) : end.end()]
            found.append((m.start(1), kind, value))
    found.sort()
    return found


def scan_text(text: str, path: str) -> list[Finding]:
    """Every secret in `text` (the contents of `path`), in order of position."""
    # invisible characters (zero-width, bidi, soft hyphen) can split a key so no pattern sees it;
    # dropping them keeps every newline, so line numbers stay right
    text = _INVISIBLE.sub("", text)
    found = _found(text)
    findings = []
    for start, kind, value in found:
        line = text.count("\n", 0, start) + 1
        column = start - (text.rfind("\n", 0, start) + 1) + 1
        findings.append(Finding(path=path, line=line, column=column, kind=kind, redacted=redact(value)))
    return findings


def redact_text(text: str) -> str:
    """`text` with every secret in it replaced by its redaction (for messages that echo input)."""
    if not text:
        return text
    text = _INVISIBLE.sub("", text)
    found = _found(text)
    if not found:
        return text
    out: list[str] = []
    pos, out_start = 0, 0
    for start, _kind, value in found:
        end = start + len(value)
        if end <= pos:
            continue  # inside a secret already redacted (a token in a URL's password)
        if start < pos:
            out[-1] = redact(text[out_start:end])  # overlapping finds become one redaction
        else:
            out.append(text[pos:start])
            out.append(redact(value))
            out_start = start
        pos = end
    out.append(text[pos:])
    return "".join(out)


def shown(value: object, limit: int = 60) -> str:
    """A user value for an error message: repr'd, secrets redacted, at most `limit` characters."""
    text = repr(redact_text(value) if isinstance(value, str) else value)
    if isinstance(value, (dict, list)):
        text = redact_text(text)
    return text if len(text) <= limit else text[: limit - 4] + "...'"
