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

What passes: references (`secretRef:` values, `${ENV}`, `$ENV`, `*_env: NAME`) never look like a
key, and every token must look random (upper and lower case letters, and a digit where the format
guarantees one), so hex digests, identifiers, docs placeholders (sk-XXXX..., AWS's ...EXAMPLE keys)
and prose do not match. The secret itself never leaves this module: findings carry only `redact()`.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Callable

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
        re.compile(r"(sk-(?!ant-)(?:(?:proj|svcacct|admin)-)?[A-Za-z0-9_-]{20,})"),
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


_INVISIBLE = re.compile("[\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")


def scan_text(text: str, path: str) -> list[Finding]:
    """Every secret in `text` (the contents of `path`), in order of position."""
    # invisible characters (zero-width, bidi, soft hyphen) can split a key so no pattern sees it;
    # dropping them keeps every newline, so line numbers stay right
    text = _INVISIBLE.sub("", text)
    found: list[tuple[int, str, str]] = _aws_secrets(text)
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
    findings = []
    for start, kind, value in found:
        line = text.count("\n", 0, start) + 1
        column = start - (text.rfind("\n", 0, start) + 1) + 1
        findings.append(Finding(path=path, line=line, column=column, kind=kind, redacted=redact(value)))
    return findings
