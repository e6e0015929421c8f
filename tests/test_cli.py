"""CLI contract: help everywhere with an example, one-line errors, tracebacks only with --debug, init."""

import re

from conftest import ROOT, git, repo_state, run_cli


def _commands():
    import typer.main

    from modelctl.cli import app

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


def test_help_examples_survive_copy_and_paste_at_80_columns():
    group, names = _commands()
    for name in ["", *names]:
        written = (group.help if not name else group.commands[name].help).split("Example:")[1].strip()
        assert written.startswith("modelctl ") and "\n" not in written, name
        proc = run_cli(*([name] if name else []), "--help", env={"COLUMNS": "80"})
        assert proc.returncode == 0, name
        lines = proc.stdout.splitlines()
        shown = lines[lines.index("  Example:") + 1]
        assert shown.strip() == written, (name, shown)  # whole, on one line: pasted as it is
        assert all(len(line) <= 80 for line in lines), name
        assert not [line for line in lines if re.search(r"\w-$", line)], name  # no name split at a hyphen


def test_version_and_shell_completion(tmp_path):
    import modelctl

    proc = run_cli("--version", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout == f"modelctl {modelctl.__version__}\n"
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'version = {attr = "modelctl.__version__"}' in pyproject  # one place for the version
    # the shell named explicitly: typer's detection reads the process tree, which a detached test run lacks
    script = run_cli("--show-completion", "bash", cwd=tmp_path, env={"_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"})
    assert script.returncode == 0 and "complete -o default -F _modelctl_completion modelctl" in script.stdout
    # what the installed script answers when bash asks for completions
    words = run_cli(cwd=tmp_path, env={"_MODELCTL_COMPLETE": "complete_bash", "COMP_WORDS": "modelctl pro",
                                       "COMP_CWORD": "1"})
    assert words.stdout.split() == ["promote"]
    opts = run_cli(cwd=tmp_path, env={"_MODELCTL_COMPLETE": "complete_bash",
                                      "COMP_WORDS": "modelctl canary support-agent 2.4.0 --p", "COMP_CWORD": "4"})
    assert sorted(opts.stdout.split()) == ["--pct", "--pr-body", "--push"]


def test_registry_from_the_environment(registry, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert run_cli("status", cwd=elsewhere).returncode == 2
    proc = run_cli("status", cwd=elsewhere, env={"MODELCTL_REGISTRY": str(registry)})
    assert proc.returncode == 0, proc.stderr
    assert "MODELCTL_REGISTRY" in run_cli("--help", env={"COLUMNS": "80"}).stdout


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


def test_a_run_of_one_command_behaves_as_with_every_command_built(registry, tmp_path):
    """main() builds only the command argv names; what a user sees must not change with it."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # global options before the name, in each spelling
    for args in (("-C", registry), (f"-C{registry}",), (f"--registry={registry}",), ("--debug", "-C", registry)):
        proc = run_cli(*args, "status", cwd=elsewhere)
        assert proc.returncode == 0 and "no models registered yet" in proc.stderr, (args, proc.stderr)
    # a mistyped name still gets the whole group's suggestions, and a command the name is a prefix of is not run
    proc = run_cli("shw", "support-agent", cwd=registry)
    assert proc.returncode == 2 and "No such command 'shw'. Did you mean 'show'" in proc.stderr
    assert run_cli("stat", cwd=registry).returncode == 2
    # the group's own help and an option where a name would be
    assert "Commands:" in run_cli("-C", registry, "--help").stdout
    assert run_cli("--no-such-flag", "status", cwd=registry).returncode == 2


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
