"""The HTML report of a judgement, opened in a real headless browser (Debian's chromium)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from html.parser import HTMLParser

import pytest
from test_watch import ACTIVE, CANARY, FakeClock, SimProvider, canary_registry, canary_template, make_watcher  # noqa: F401

from modelctl import watch


def chromium() -> str:
    """The chromium binary; skipped only when it is absent outside CI (scripts/test.sh installs it)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed (scripts/test.sh installs it with apt-get)")
    pytest.skip("chromium is not installed")


def dump_dom(path) -> str:
    """The DOM chromium builds from the page (no network: the page must not need any)."""
    proc = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           "--disable-extensions", "--proxy-server=127.0.0.1:9", "--dump-dom",
                           f"file://{path}"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


class Shapes(HTMLParser):
    """What the browser's DOM holds: SVGs, polylines by class with their point counts, texts."""

    def __init__(self):
        super().__init__()
        self.svgs = 0
        self.lines: list[tuple[str, int]] = []
        self.marks = 0
        self.texts: list[str] = []
        self._in_text = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "svg":
            self.svgs += 1
        elif tag == "polyline":
            self.lines.append((attrs.get("class", ""), len((attrs.get("points") or "").split())))
        elif tag == "line" and attrs.get("class") == "mark":
            self.marks += 1
        self._in_text = tag in ("text", "li", "p", "h2", "code")

    def handle_data(self, data):
        if self._in_text and data.strip():
            self.texts.append(data.strip())


def test_watch_report_shows_rates_statistic_boundary_and_the_decision(canary_registry, tmp_path):  # noqa: F811 (fixture)
    page = tmp_path / "judgement.html"
    clock = FakeClock()
    provider = SimProvider(clock, {ACTIVE: 0.01, CANARY: 0.03}, rps={ACTIVE: 900, CANARY: 100})
    w, polls, _ = make_watcher(canary_registry, clock, provider, watch.WatchOptions(interval=5, report=page))
    result = w.run()
    assert result.outcome == watch.ROLLED_BACK
    html = page.read_text()
    # self-contained: no script, no stylesheet or image to fetch
    assert "<script" not in html and not re.search(r"\b(src|href)=|@import|url\(", html)
    shapes = Shapes()
    shapes.feed(dump_dom(page))
    assert shapes.svgs >= 3  # errors per request, and the error_rate and latency statistics
    kinds = dict(shapes.lines)
    assert {"control", "canary", "statistic", "boundary"} <= set(kinds)
    assert all(points >= 3 for _, points in shapes.lines if _ in ("control", "canary"))
    assert shapes.marks >= 3  # the decision, on every chart
    text = " ".join(shapes.texts)
    assert f"rollback at poll {result.polls}" in text
    assert "errors per request, interval by interval" in text and "error_rate: statistic against its boundary" in text
    assert result.evidence[0] in text


def test_replay_report_has_one_section_per_canary(canary_registry, tmp_path):  # noqa: F811 (fixture)
    from conftest import run_cli

    record = tmp_path / "polls.jsonl"
    for rate in (0.01, 0.04):
        clock = FakeClock()
        provider = SimProvider(clock, {ACTIVE: 0.01, CANARY: rate}, rps={ACTIVE: 900, CANARY: 100})
        w, _, _ = make_watcher(canary_registry, clock, provider,
                               watch.WatchOptions(interval=5, max_duration="3m", dry_run=True, record=record))
        w.run()
        text = record.read_text()
        # the second canary of the file: another start, so another canary id
        record.write_text(text.replace(w.following_id, f"{w.following_id}-{rate}"))
    page = tmp_path / "replay.html"
    proc = run_cli("replay", record, "--report", page, cwd=canary_registry)
    assert proc.returncode == 0, proc.stderr
    shapes = Shapes()
    shapes.feed(dump_dom(page))
    text = " ".join(shapes.texts)
    assert text.count(f"support-agent {CANARY} vs control {ACTIVE}") == 2
    assert "decision: rollback at poll" in text and "decision: no decision" in text
