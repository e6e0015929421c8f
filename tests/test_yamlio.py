"""Strict YAML: what is refused, and what is written reads back identically with YAML 1.1 readers."""

import pytest
import yaml as pyyaml

from modelctl import yamlio
from modelctl.errors import ValidationError


@pytest.mark.parametrize("text, fragment", [
    ("a: &x 1\nb: *x\n", "anchor &x"),
    ("a: [1]\nb: *a\n", "alias"),
    ("base: {k: 1}\nx:\n  <<: {k: 2}\n", "merge keys"),
    ("a: !!python/object:os.system x\n", "explicit tag"),
    ("a: !custom 1\n", "explicit tag"),
    ("%YAML 1.1\n---\na: 1\n", "directives"),
    ("%TAG !e! tag:example.com,2000:\n---\na: 1\n", "directives"),
    ("a: 1\n---\nb: 2\n", "several YAML documents"),
    ("a: 1\nb: 2\na: 3\n", "duplicate key 'a'"),
    ("1.10: x\n", "must be a string"),
    ("? [a, b]\n: 1\n", "mapping key"),
    ("a: [1, 2\n", "invalid YAML"),
])
def test_refuses_ambiguous_yaml_with_file_and_line(text, fragment):
    with pytest.raises(ValidationError) as exc:
        yamlio.loads(text, "bundle.yaml")
    assert fragment in str(exc.value)
    assert str(exc.value).startswith("bundle.yaml:")


def test_reports_the_line_of_the_offending_node():
    with pytest.raises(ValidationError) as exc:
        yamlio.loads("a: 1\nb: 2\nc:\n  d: 1\n  d: 2\n", "f.yaml")
    assert str(exc.value).startswith("f.yaml:5:")


def test_refuses_files_over_256_kib():
    big = b"a: " + b"x" * (256 * 1024) + b"\n"
    with pytest.raises(ValidationError, match="limit is 262144"):
        yamlio.loads(big, "big.yaml")


def test_refuses_non_utf8():
    with pytest.raises(ValidationError, match="not UTF-8"):
        yamlio.loads(b"a: \xff\xfe\n", "bin.yaml")


def test_yaml_12_core_resolution_never_coerces_versions():
    doc = yamlio.loads('v: 1.10\nq: "1.10"\nyes_word: yes\nt: true\nn: ~\nh: 0x1F\n', "f")
    assert doc.data["v"] == 1.1 and isinstance(doc.data["v"], float)
    assert doc.raw[("v",)] == "1.10"  # kept for the error message
    assert doc.data["q"] == "1.10"
    assert doc.data["yes_word"] == "yes"  # YAML 1.2: a string, not a boolean
    assert doc.data["t"] is True and doc.data["n"] is None and doc.data["h"] == 31


@pytest.mark.parametrize("text, fragment", [
    ("a: .nan\n", ".nan is not a usable number"),
    ("a: [1, -.inf]\n", "-.inf is not a usable number"),
    ("d: " + "{a: " * 200 + "1" + "}" * 200 + "\n", "nesting deeper than 32"),
    ("d: " + "[" * 2000 + "]" * 2000 + "\n", "nesting deeper than 32"),  # PyYAML >= 6.0.3 stops first
    ("d: " + "[" * 999 + "]" * 999 + "\n", "nesting deeper than 32"),    # just below PyYAML's own limit
])
def test_refuses_non_finite_numbers_and_deep_nesting(text, fragment):
    with pytest.raises(ValidationError) as exc:
        yamlio.loads(text, "f.yaml")
    assert str(exc.value).startswith("f.yaml:1: ") and fragment in str(exc.value)


def test_deep_block_nesting_names_the_line():
    text = "".join("  " * i + f"k{i}:\n" for i in range(40)) + "  " * 40 + "v: 1\n"
    with pytest.raises(ValidationError) as exc:
        yamlio.loads(text, "f.yaml")
    assert str(exc.value) == "f.yaml:33: nesting deeper than 32 levels"


TRICKY = {
    "apiVersion": "modelctl/v1",
    "versions": {"2.3.1": "active", "1.10.0": "deprecated"},
    "words": ["yes", "no", "on", "off", "y", "n", "null", "~", "true", "False"],
    "numbers_as_strings": ["1.10", "010", "0x1F", "1e3", "12:30", "1_000", ".5", "+1", "0o17"],
    "odd": ["", " lead", "trail ", "a: b", "#hash", "- dash", "[x]", "{y}", "*star", "&amp", "!bang",
            "%pct", "@at", "`tick", "quote\"d", "multi\nline", "tab\tbed", "ünïcode",
            "gpt-4o\n", "x.txt\n", "\n"],
    "floats": [0.01, 1e-05, 1e17, 3.0, -2.5],
    "ints": [0, 7, -3, 12500],
    "null": None,
    "bools": [True, False],
    "nested": {"deep": {"er": [1, {"x": "2.4.0"}]}},
}


def test_written_yaml_reads_back_identically_with_pyyaml_and_strict_loader():
    text = yamlio.dumps(TRICKY)
    assert pyyaml.safe_load(text) == TRICKY  # a YAML 1.1 reader (Kubernetes tools)
    assert yamlio.loads(text, "out.yaml").data == TRICKY


def test_rewrite_keeps_comments():
    before = "# who owns this\nname: a  # the model\nactive: null\n"
    text = yamlio.dumps({"name": "a", "active": "1.0.0"}, before)
    assert "# who owns this" in text and "# the model" in text
    assert pyyaml.safe_load(text) == {"name": "a", "active": "1.0.0"}


def test_every_file_modelctl_writes_reads_back_identically_with_pyyaml(registry, write_bundle):
    """After a lifecycle with a rollback, every YAML file in the registry means the same to PyYAML."""
    from modelctl import Registry

    reg = Registry(registry)
    reg.register(write_bundle(version="1.0.0"))
    reg.register(write_bundle("b2.yaml", version="1.0.1", parent="1.0.0", prompt="prompts/p2.txt"))
    reg.promote("support-agent", "1.0.0", "staging")
    reg.promote("support-agent", "1.0.0", "active")
    for to in ("staging",):
        reg.promote("support-agent", "1.0.1", to)
    reg.shadow("support-agent", "1.0.1", 10)
    reg.canary("support-agent", "1.0.1", 5)
    reg.rollback("support-agent", reason="yes: on 1.10 at 12:30")
    checked = 0
    for path in sorted(registry.rglob("*.yaml")):
        if ".git" in path.parts:
            continue
        text = path.read_text()
        assert pyyaml.safe_load(text) == yamlio.loads(text, str(path)).data, path
        checked += 1
    assert checked >= 4


@pytest.mark.parametrize("text", [
    "n: " + "9" * 310 + "\n",
    "n: -" + "1" * 19 + "\n",
    "n: " + "7" * 5000 + "\n",
    "n: 1.5e19\n",
    "n: 0x" + "f" * 20 + "\n",
])
def test_numbers_past_the_bound_are_refused_with_file_and_line(text):
    with pytest.raises(ValidationError) as exc:
        yamlio.loads("a: 1\n" + text, "b.yaml")
    message = str(exc.value)
    assert message.startswith("b.yaml:2: ") and ("too large a number" in message or "not a usable number" in message)
    assert len(message) < 120  # the 5000 digits are not echoed


def test_numbers_up_to_the_bound_load():
    assert yamlio.loads("a: 1000000000000000000\nb: -1.0e18\n", "b.yaml").data == {"a": 10**18, "b": -1e18}


def test_a_string_ending_in_a_newline_is_written_quoted():
    text = yamlio.dumps({"id": "gpt-4o\n"})
    assert text == 'id: "gpt-4o\\n"\n'
    assert yamlio.loads(text, "x.yaml").data == {"id": "gpt-4o\n"}
