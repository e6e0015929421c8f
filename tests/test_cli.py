"""CLI contract: help everywhere with an example, one-line errors, tracebacks only with --debug, init."""

from conftest import git, repo_state, run_cli


def _commands():
    from modelctl.cli import app
    import typer.main

    group = typer.main.get_command(app)
    return group, sorted(group.commands)


def test_every_command_and_option_has_help_and_an_example():
    group, names = _commands()
    assert {"init", "register", "status", "show", "diff", "check", "demo"} <= set(names)
    for name in names:
        cmd = group.commands[name]
        assert cmd.help and "Example:" in cmd.help, f"{name} has no example in its help"
        for param in cmd.params:
            if param.param_type_name == "option":
                assert getattr(param, "help", None), f"{name} {param.opts} has no help"
            else:
                assert getattr(param, "help", None), f"{name} argument {param.name} has no help"


def test_help_runs_for_every_command():
    _, names = _commands()
    for name in names:
        proc = run_cli(name, "--help")
        assert proc.returncode == 0 and "Example:" in proc.stdout, name


def test_python_dash_m_and_version_of_errors(tmp_path):
    proc = run_cli("show", "support-agent", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1


def test_debug_shows_traceback(tmp_path):
    proc = run_cli("--debug", "show", "support-agent", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" in proc.stderr


def test_unknown_option_is_usage_exit_2(registry):
    before = repo_state(registry)
    proc = run_cli("status", "--no-such-flag", cwd=registry)
    assert proc.returncode == 2
    assert repo_state(registry) == before


def test_init_lays_out_the_template(tmp_path):
    proc = run_cli("init", tmp_path / "r")
    assert proc.returncode == 0, proc.stderr
    r = tmp_path / "r"
    for p in ("modelctl.yaml", "README.md", "bundles", "deployments", "evals", "prompts"):
        assert (r / p).exists(), p
    assert git(r, "log", "--format=%s").strip() == "modelctl: init registry"
    assert git(r, "status", "--porcelain") == ""
    # every key of modelctl.yaml is commented
    text = (r / "modelctl.yaml").read_text()
    assert text.count("#") > 30


def test_init_refuses_non_empty_or_existing(tmp_path):
    assert run_cli("init", tmp_path / "r").returncode == 0
    before = repo_state(tmp_path / "r")
    again = run_cli("init", tmp_path / "r")
    assert again.returncode == 2 and "already holds a modelctl registry" in again.stderr
    assert repo_state(tmp_path / "r") == before
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    proc = run_cli("init", other)
    assert proc.returncode == 2 and "not empty" in proc.stderr
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]


def test_init_adopts_an_empty_git_repository(tmp_path):
    r = tmp_path / "r"
    r.mkdir()
    git(r, "init", "-q", "-b", "trunk")
    assert run_cli("init", r).returncode == 0
    assert git(r, "rev-parse", "--abbrev-ref", "HEAD").strip() == "trunk"
