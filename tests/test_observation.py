"""The poll record format: round trip and strict parsing."""
import json
import math

import pytest

from modelctl.errors import ValidationError
from modelctl.observation import Counters, Poll, Reading


def _poll():
    control = Counters(requests=10234, events={"errors": 98},
                       latency_buckets=((250, 900), (500, 9000), (1000, 10100), (math.inf, 10234)),
                       cost_total=11.2, gauges={"latency_p95_ms": 870.0})
    canary = Counters(requests=520, events={"errors": 6}, gauges={"latency_p95_ms": math.nan})
    return Poll(time=1767225600.0, control="2.3.1", canary="2.4.0", percent=5,
                readings={"2.3.1": Reading(segments={"": control, "eu": Counters(requests=10)}, timestamp=1767225599.0),
                          "2.4.0": Reading(segments={"": canary}, problems={"errors": "NaN"})},
                model="support-agent", canary_id="support-agent:2.4.0:1767225000")


def test_round_trip_through_a_jsonl_line():
    poll = _poll()
    line = json.dumps(poll.to_json(), allow_nan=False)  # strict JSON: infinities and NaN become strings
    doc = json.loads(line)
    assert doc["schema"] == "modelctl/poll-v1"
    assert doc["readings"]["2.3.1"]["segments"][""]["latency_buckets"][-1] == ["+Inf", 10234]
    back = Poll.from_json(doc)
    assert back.readings["2.3.1"] == poll.readings["2.3.1"]
    assert math.isnan(back.readings["2.4.0"].segments[""].gauges["latency_p95_ms"])
    assert back.readings["2.4.0"].problem("errors") == "NaN"
    assert (back.time, back.control, back.canary, back.percent, back.model, back.canary_id) == \
        (poll.time, poll.control, poll.canary, poll.percent, poll.model, poll.canary_id)


def test_an_error_poll_round_trips():
    poll = Poll(time=1.0, control="1.0.0", canary="1.1.0", percent=None, readings={}, error="connection refused")
    assert Poll.from_json(json.loads(json.dumps(poll.to_json()))) == poll


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(schema="modelctl/poll-v9"), "schema"),
    (lambda d: d.update(time="noon"), "poll.time must be a number"),
    (lambda d: d.update(canary=""), "poll.canary"),
    (lambda d: d.update(percent=150), "poll.percent"),
    (lambda d: d.update(surprise=1), "unknown key 'surprise'"),
    (lambda d: d["readings"]["2.4.0"]["segments"][""].update(requests=True), "requests must be a number"),
    (lambda d: d["readings"]["2.3.1"]["segments"][""].update(latency_buckets=[[250]]), "latency_buckets[0]"),
    (lambda d: d["readings"]["2.4.0"].update(problems={"*": 3}), "problems.*"),
    (lambda d: d.update(readings=[]), "poll.readings must be a JSON object"),
])
def test_from_json_is_strict_with_a_one_line_reason(mutate, message):
    doc = json.loads(json.dumps(_poll().to_json()))
    mutate(doc)
    with pytest.raises(ValidationError) as exc:
        Poll.from_json(doc)
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)
