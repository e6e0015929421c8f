"""Helpers for gate, check and pull-request tests: bundles with eval reports, registry settings."""
from __future__ import annotations

from pathlib import Path

from conftest import git

NAME = "support-agent"

REPORT = """\
apiVersion: modelctl/v1
kind: EvalReport
name: {name}
version: "{version}"
dataset: {{name: golden-support, version: "{dataset}"}}
metrics:
{metrics}created: "2026-04-20T10:00:00Z"
"""

BUNDLE = """\
apiVersion: modelctl/v1
kind: Bundle
name: {name}
version: "{version}"
{parent}model:
  provider: openai
  id: {model_id}
prompt:
  template: prompts/p1.txt
config:
  temperature: {temperature}
  max_tokens: 1024
{eval}baseline:
  error_rate: 0.01
  latency_p95_ms: 890
  cost_per_request: 0.0012
  requests: 12500
{fallbacks}"""

GOOD = {"accuracy": (0.942, 1200), "hallucination_rate": (0.011, 1200), "latency_p95_ms": (870, None)}


def report_text(version: str, name: str = NAME, dataset: str = "3", **metrics) -> str:
    """An eval report; metrics as name=(value, n or None); default: GOOD."""
    metrics = metrics or GOOD
    lines = ""
    for metric, (value, n) in metrics.items():
        lines += f"  {metric}: {{value: {value}" + (f", n: {n}" if n is not None else "") + "}\n"
    return REPORT.format(name=name, version=version, dataset=dataset, metrics=lines)


def write_report(registry: Path, version: str, commit: bool = False, **kw) -> str:
    """Write evals/<name>/<version>.yaml in the work tree (register commits it with the bundle)."""
    rel = f"evals/{kw.get('name', NAME)}/{version}.yaml"
    path = registry / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report_text(version, **kw))
    if commit:
        git(registry, "add", rel)
        git(registry, "commit", "-q", "-m", f"eval report {version}")
    return rel


def bundle_file(tmp: Path, version: str, parent: str | None = None, temperature: float = 0.3, report: bool = True,
                fallbacks: bool = False, model_id: str = "gpt-4.1-mini-2025-04-14", name: str = NAME) -> Path:
    """A bundle file outside the registry, naming evals/<name>/<version>.yaml when `report`."""
    text = BUNDLE.format(
        name=name, version=version, parent=f'parent: "{parent}"\n' if parent else "", model_id=model_id,
        temperature=temperature,
        eval=f"eval:\n  report: evals/{name}/{version}.yaml\n" if report else "",
        fallbacks="fallbacks:\n  - {provider: anthropic, id: claude-sonnet-4-5-20250929}\n" if fallbacks else "",
    )
    path = tmp / "in" / f"{name}-{version}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def register(registry: Path, tmp: Path, version: str, parent: str | None = None, metrics: dict | None = None,
             dataset: str = "3", report: bool = True, **kw) -> None:
    """Write the version's eval report (unless report=False) and register its bundle (set-up: in process)."""
    from modelctl import ops
    from modelctl.registry import Registry

    if report:
        write_report(registry, version, dataset=dataset, **(metrics or {}))
    temperature = kw.pop("temperature", round(0.3 + 0.01 * int(version.split(".")[1]), 2))
    ops.register(Registry(registry), bundle_file(tmp, version, parent, temperature=temperature, report=report, **kw))


def configure(registry: Path, *, gate_required: bool | None = None, pipeline: list[str] | None = None,
              extra: str = "") -> None:
    """Edit modelctl.yaml in place and commit it."""
    path = registry / "modelctl.yaml"
    text = path.read_text()
    if gate_required is not None:
        text = text.replace("gate:\n  required: false", f"gate:\n  required: {str(gate_required).lower()}")
    if pipeline is not None:
        text = text.replace("required: [staging, shadow, canary]", f"required: [{', '.join(pipeline)}]")
    path.write_text(text + extra)
    git(registry, "commit", "-q", "-am", "configure")


def promote(registry: Path, version: str, to: str = "active") -> None:
    """Set-up: promote in process (the CLI is what the tests exercise)."""
    from modelctl import ops
    from modelctl.registry import Registry

    ops.promote(Registry(registry), NAME, version, to)


def trailers(repo: Path, rev: str = "HEAD") -> dict:
    text = git(repo, "log", "-1", "--format=%(trailers:only,unfold)", rev)
    return dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)
