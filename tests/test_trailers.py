"""The trailers module: one key table, one format, one parser, agreeing with git's own trailer parser."""
import subprocess

import pytest

from modelctl import trailers


def test_transition_trailers_come_in_the_fixed_order_and_skip_empty_values():
    pairs = trailers.transition("canary", "support-agent", "1.1.0", number=lambda x: f"{x:g}",
                                reason="ramp", percent=5.0, from_status="staging", to_status="canary",
                                skipped=[], force=False, waived=["shadow"], override=None)
    assert pairs == [("Modelctl-Action", "canary"), ("Modelctl-Model", "support-agent"),
                     ("Modelctl-Version", "1.1.0"), ("Modelctl-From", "staging"), ("Modelctl-To", "canary"),
                     ("Modelctl-Percent", "5"), ("Modelctl-Waived", "shadow"), ("Modelctl-Reason", "ramp")]


def test_an_unknown_transition_field_is_refused():
    with pytest.raises(TypeError, match="percnet"):
        trailers.transition("canary", "m", "1.0.0", percnet=5)


def test_message_is_subject_body_and_trailer_paragraphs():
    text = trailers.message("modelctl: promote m 1.0.0", "why\n", [(trailers.ACTION, "promote")])
    assert text == "modelctl: promote m 1.0.0\n\nwhy\n\nModelctl-Action: promote\n"
    assert trailers.message("s") == "s\n"


def test_parse_keeps_the_first_value_of_modelctl_keys_only():
    block = "Signed-off-by: A <a@example.com>\nModelctl-Action: rollback\nModelctl-Action: again\nModelctl-Reason:  p99 \n"
    assert trailers.parse(block) == {"Modelctl-Action": "rollback", "Modelctl-Reason": "p99"}
    assert trailers.parse_pairs(block)[0] == ("Signed-off-by", "A <a@example.com>")
    assert trailers.first(trailers.parse_pairs(block), trailers.ACTION) == "rollback"
    assert trailers.only(trailers.parse_pairs(block), [trailers.REASON]) == {"Modelctl-Reason": "p99"}


def test_what_message_writes_git_reads_back_as_the_same_trailers(tmp_path):
    env = {"GIT_AUTHOR_NAME": "A", "GIT_AUTHOR_EMAIL": "a@example.com", "GIT_COMMITTER_NAME": "A",
           "GIT_COMMITTER_EMAIL": "a@example.com", "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    subprocess.run(["git", "init", "-q", str(tmp_path / "r")], check=True, env=env)
    pairs = trailers.transition("rollback", "m", "1.2.0", from_status="canary", to_status="rolled-back",
                                percent=5, reason="error rate 2.1% vs 1.0%: rolled back",
                                evidence="errors: canary 2.1% (n=3000) vs control 1.0%; llr 5.2 >= 4.6")
    text = trailers.message("modelctl: rollback m 1.2.0", "A body line.", pairs)
    subprocess.run(["git", "commit", "-q", "--allow-empty", "-F", "-"], input=text.encode(), cwd=tmp_path / "r",
                   check=True, env=env)
    block = subprocess.run(["git", "log", "-1", "--format=%(trailers:only,unfold)"], cwd=tmp_path / "r",
                           capture_output=True, check=True, env=env).stdout.decode()
    assert trailers.parse_pairs(block) == pairs
