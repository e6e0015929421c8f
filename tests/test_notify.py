"""Webhook notifications against a real HTTP receiver on 127.0.0.1 that answers, fails and stalls.

Retry back-off waits are injected (recorded, not slept); the only real waiting is the client's
own timeout against a receiver that does not answer, which is the behaviour under test.
"""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from modelctl.errors import UsageError
from modelctl.notify import Delivery, Event, Notifier, Settings, Webhook, settings

STALL = threading.Event()  # set at teardown so a stalled handler lets go


class Receiver:
    """A webhook receiver: each request takes the next behaviour of `plan` (then 'ok')."""

    def __init__(self, plan: list[str] | None = None):
        self.plan = list(plan or [])
        self.received: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                how = outer.plan.pop(0) if outer.plan else "ok"
                outer.received.append({"path": self.path, "how": how, "body": json.loads(body),
                                       "authorization": self.headers.get("Authorization")})
                if how == "stall":
                    STALL.wait(10)  # answers only after the client gave up
                    return
                code = 200 if how == "ok" else int(how)
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made: list[Receiver] = []

    def make(plan: list[str] | None = None) -> Receiver:
        made.append(Receiver(plan))
        return made[-1]

    STALL.clear()
    yield make
    STALL.set()
    for r in made:
        r.close()


ROLLBACK = Event("rollback", "support-agent", "2.4.0", active="2.3.1", percent=0.0,
                 reason="error_rate failed 2 polls in a row", commit="0123456789abcdef0123",
                 metrics=({"name": "error_rate", "verdict": "fail", "statistic": 61.9, "boundary": 4.6},
                          {"name": "latency", "verdict": "pass", "statistic": -1.0, "boundary": 4.6}),
                 at=1767225600)


def notifier(hooks, *, timeout=0.2, deadline=5.0, retries=3):
    slept: list[float] = []
    n = Notifier(Settings(tuple(hooks), timeout, deadline, retries), sleep=slept.append, rand=lambda: 0.5)
    return n, slept


def test_a_rollback_reaches_a_json_receiver_and_a_slack_receiver(receiver):
    audit, chat = receiver(), receiver()
    n, _ = notifier([Webhook("audit", audit.url, "json", token="s3cret"), Webhook("chat", chat.url, "slack")])
    n.notify(ROLLBACK)
    assert n.drain(10)
    assert [d.ok for d in n.deliveries] == [True, True]
    doc = audit.received[0]["body"]
    assert doc["schema"] == "modelctl/v1" and doc["event"] == "rollback"
    assert (doc["model"], doc["version"], doc["active"], doc["commit"]) == ("support-agent", "2.4.0", "2.3.1",
                                                                            "0123456789abcdef0123")
    assert doc["at"] == "2026-01-01T00:00:00Z"
    assert audit.received[0]["authorization"] == "Bearer s3cret"
    assert chat.received[0]["authorization"] is None
    text = chat.received[0]["body"]["text"]
    assert text.startswith("modelctl rolled back support-agent 2.4.0; 2.3.1 serves all traffic")
    assert "error_rate 61.9 > 4.6" in text and "latency" not in text and "[commit 0123456789ab]" in text


def test_the_json_document_matches_its_published_schema(receiver):
    import jsonschema
    from conftest import ROOT

    schema = json.loads((ROOT / "schemas/output/notification.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    for event in (ROLLBACK, Event("hold", "m", "1.0.0", percent=5.0), Event("step", "m", "1.0.0", percent=25)):
        jsonschema.validate(event.document(), schema)


def test_server_errors_are_retried_with_back_off_until_one_lands(receiver):
    r = receiver(["500", "503", "ok"])
    n, slept = notifier([Webhook("audit", r.url)])
    n.notify(ROLLBACK)
    assert n.drain(10)
    (d,) = n.deliveries
    assert (d.ok, d.attempts, d.status) == (True, 3, 200)
    assert len(r.received) == 3 and slept == [0.25 * 0.75, 0.5 * 0.75]


def test_a_refusal_is_not_retried_and_is_reported_without_the_url(receiver):
    r = receiver(["401"])
    reported: list[Delivery] = []
    n = Notifier(Settings((Webhook("audit", r.url + "?token=hidden"),), 0.2, 5.0, 3), sleep=lambda s: None,
                 report=reported.append)
    n.notify(ROLLBACK)
    assert n.drain(10)
    (d,) = reported
    assert (d.ok, d.attempts, d.status, d.error) == (False, 1, 401, "HTTP 401")
    line = d.line()
    assert line.startswith("could not notify audit of the rollback of support-agent after 1 attempt(s)")
    assert line.endswith("the decision stands") and "hidden" not in line and "127.0.0.1" not in line


def test_a_stalling_receiver_costs_bounded_attempts_and_never_blocks_the_caller(receiver):
    r = receiver(["stall", "stall", "stall", "stall", "stall"])
    n, slept = notifier([Webhook("audit", r.url)], timeout=0.2, retries=2)
    n.notify(ROLLBACK)  # returns at once: delivery is on the notifier's thread
    assert list(n.deliveries) == []
    assert n.drain(10)
    (d,) = n.deliveries
    assert (d.ok, d.attempts, d.status) == (False, 3, None)
    assert d.error == "no answer before the timeout"
    assert len(slept) == 2


def test_the_deadline_bounds_all_attempts():
    clock = {"now": 0.0}

    def post(url, body, headers, timeout):
        clock["now"] += timeout  # each attempt uses its whole timeout, then fails
        raise TimeoutError("read timed out")

    def sleep(seconds):
        clock["now"] += seconds

    n = Notifier(Settings((Webhook("audit", "http://127.0.0.1:9/x"),), 2.0, 5.0, 10), post=post,
                 monotonic=lambda: clock["now"], sleep=sleep, rand=lambda: 0.0)
    d = n.deliver(n.config.webhooks[0], ROLLBACK)
    assert not d.ok and d.seconds <= 5.0 and d.attempts == 3
    assert "deadline reached" in d.error


def test_an_unreachable_receiver_is_one_failed_delivery(receiver):
    r = receiver()
    url = r.url
    r.close()
    n, _ = notifier([Webhook("audit", url)], retries=1)
    n.notify(ROLLBACK)
    assert n.drain(10)
    (d,) = n.deliveries
    assert not d.ok and d.attempts == 2 and d.error == "connection refused or unreachable"


def test_each_webhook_gets_only_the_events_it_asked_for(receiver):
    r = receiver()
    n, _ = notifier([Webhook("pager", r.url, events=("rollback",))])
    n.notify(Event("step", "m", "1.0.0", percent=10))
    n.notify(Event("hold", "m", "1.0.0", percent=10))
    n.notify(ROLLBACK)
    assert n.drain(10)
    assert [x["body"]["event"] for x in r.received] == ["rollback"]


def test_no_webhooks_means_no_thread_and_nothing_sent():
    n = Notifier(Settings())
    assert not n
    n.notify(ROLLBACK)
    assert n.drain(0.01) and list(n.deliveries) == []


# -- configuration -------------------------------------------------------------------------------

ENV = {"HOOK_URL": "https://hooks.example.invalid/T000/B000/xyz", "HOOK_TOKEN": "tok"}


def test_settings_read_urls_and_tokens_from_the_environment():
    s = settings({"timeout": 2, "deadline": 10, "retries": 1,
                  "webhooks": [{"name": "chat", "url_env": "HOOK_URL", "format": "slack", "events": ["rollback"]},
                               {"name": "audit", "url_env": "HOOK_URL", "token_env": "HOOK_TOKEN"}]}, ENV)
    assert (s.timeout, s.deadline, s.retries) == (2.0, 10.0, 1)
    chat, audit = s.webhooks
    assert (chat.format, chat.events, chat.token) == ("slack", ("rollback",), None)
    assert (audit.format, audit.events, audit.token) == ("json", ("rollback", "step", "promotion", "hold"), "tok")
    assert "xyz" not in repr(s) and "tok" not in repr(audit)
    assert settings(None, ENV) == Settings() and settings({}, ENV) == Settings()


@pytest.mark.parametrize(("section", "fragment"), [
    ({"webhooks": [{"name": "chat", "url_env": "MISSING"}]}, "the environment variable MISSING is not set"),
    ({"webhooks": [{"name": "chat", "url_env": "HOOK_URL", "token_env": "NOPE"}]}, "NOPE is not set"),
    ({"webhooks": [{"name": "chat", "url_env": "HOOK_TOKEN"}]}, "HOOK_TOKEN is not an http(s) URL"),
    ({"webhooks": [{"name": "chat", "url_env": "HOOK_URL", "format": "teams"}]}, "format must be one of json, slack"),
    ({"webhooks": [{"name": "chat", "url_env": "HOOK_URL", "events": ["deploy"]}]}, "events must list some of"),
    ({"webhooks": [{"name": "chat", "url_env": "HOOK_URL", "url": "https://x"}]}, "unknown key 'url'"),
    ({"webhooks": [{"name": "a", "url_env": "HOOK_URL"}, {"name": "a", "url_env": "HOOK_URL"}]}, "used twice"),
    ({"retries": -1}, "retries must be a whole number"),
    ({"timeout": 0}, "timeout must be a number of seconds"),
    ({"webhooks": {"name": "a"}}, "webhooks must be a list"),
])
def test_bad_settings_are_refused_with_what_to_fix(section, fragment):
    with pytest.raises(UsageError) as err:
        settings(section, ENV)
    assert fragment in str(err.value)
    assert "hooks.example.invalid" not in str(err.value)


def test_a_full_queue_drops_an_event_with_a_report_and_never_waits():
    import queue

    release = threading.Event()

    def post(url, body, headers, timeout):
        release.wait(10)  # a receiver that stalls until the test lets it go
        return 200

    reported: list[Delivery] = []
    n = Notifier(Settings((Webhook("audit", "http://127.0.0.1:9/x"),), 1.0, 30.0, 0), post=post,
                 report=reported.append)
    n._queue = queue.Queue(maxsize=1)  # what 1,000 queued events behind a stalled receiver look like
    for _ in range(3):  # one in delivery, one queued: the third cannot fit
        n.notify(ROLLBACK)
    dropped = [d for d in reported if d.error and d.error.startswith("dropped")]
    assert dropped and all((d.ok, d.attempts, d.webhook) == (False, 0, "audit") for d in dropped)
    release.set()
    assert n.drain(10)
    assert sum(d.ok for d in n.deliveries) == 3 - len(dropped)
