"""Names first: hostile names and versions exit 2 before git or the filesystem is touched."""
import pytest
from conftest import bundle_text, repo_state, run_cli

from modelctl import names
from modelctl.errors import InvalidName

HOSTILE = ["-f", "--upload-pack=touch x", "../x", "a..b", "HEAD", "bad\x07name", "bidi\u202eevil",
           "x" * 300, "UPPER", "a/b", "a b", "", "-", "trailing-", "ünï"]


@pytest.mark.parametrize("bad", HOSTILE, ids=range(len(HOSTILE)))
def test_check_name_refuses(bad):
    with pytest.raises(InvalidName):
        names.check_name(bad)


@pytest.mark.parametrize("bad", ["1.10", "v1.0.0", "1.0", "01.0.0", "1.0.0+build", "1.0.0-", "HEAD", "../1.0.0",
                                 "1.0.0\n", "-f", "1" * 300])
def test_check_version_refuses(bad):
    with pytest.raises(InvalidName):
        names.check_version(bad)


@pytest.mark.parametrize("good", ["0.0.1", "2.4.0", "2.4.0-rc.1", "10.20.30-alpha.beta-2"])
def test_check_version_accepts(good):
    assert names.check_version(good) == good


def test_semver_ordering():
    order = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-beta", "1.0.0-rc.1", "1.0.0", "1.0.1", "1.10.0", "2.0.0"]
    assert sorted(reversed(order), key=names.semver_key) == order


def _commands(bad):
    return [
        ["status", bad], ["show", bad], ["show", f"{bad}@1.0.0"], ["show", f"support-agent@{bad}"],
        ["diff", bad, "1.0.0", "1.0.1"], ["diff", "support-agent", bad, "1.0.0"],
    ]


@pytest.mark.parametrize("bad", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_names_on_the_command_line_change_nothing(registry, tmp_path, bad):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    before = repo_state(registry)
    for args in _commands(bad):
        proc = run_cli("-C", registry, *args, cwd=cwd)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr
    assert repo_state(registry) == before
    assert list(cwd.iterdir()) == []  # nothing appeared outside the registry either


@pytest.mark.parametrize("bad", ["../x", "a..b", "HEAD", "-f", "bidi\u202eevil", "x" * 300])
def test_hostile_names_in_a_bundle_change_nothing(registry, tmp_path, bad):
    f = tmp_path / "in.yaml"
    f.write_text(bundle_text().replace("name: support-agent", f'name: "{bad}"'))
    before = repo_state(registry)
    proc = run_cli("register", f, cwd=registry)
    assert proc.returncode == 2 and "invalid model name" in proc.stderr
    assert repo_state(registry) == before
