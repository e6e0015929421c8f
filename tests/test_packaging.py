"""The wheel ships schemas and the registry template: install it in a fresh virtualenv and init.

The inner virtualenv is made from the running interpreter (inside a venv or not) and sees the running
environment's installed packages through a `.pth` file, so the wheel is installed offline with its
dependencies resolved against what is already installed, and `pip check` proves the wheel's declared
requirements are met by them.
"""
import json
import subprocess
import sys
import zipfile

from conftest import ROOT

SHIPPED = ("modelctl/data/schemas/bundle.schema.json", "modelctl/data/schemas/registry.schema.json",
           "modelctl/data/schemas/deployment.schema.json", "modelctl/data/schemas/eval-report.schema.json",
           "modelctl/data/registry-template/modelctl.yaml", "modelctl/data/registry-template/README.md", "modelctl/py.typed",
           *(f"modelctl/data/schemas/output/{p.name}" for p in sorted((ROOT / "schemas" / "output").glob("*.json"))))


def outer_site_dirs() -> list[str]:
    """The running interpreter's site-packages directories (venv or system, user site included)."""
    code = ("import json, site, sysconfig; paths = site.getsitepackages(); "
            "paths += [site.getusersitepackages()] if site.ENABLE_USER_SITE else []; "
            "paths += [sysconfig.get_paths()['purelib'], sysconfig.get_paths()['platlib']]; print(json.dumps(paths))")
    paths = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                      check=True).stdout)
    seen: list[str] = []
    for path in paths:
        if path not in seen:
            seen.append(path)
    return seen


def test_wheel_installs_and_inits(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist),
                    str(ROOT)], check=True, capture_output=True)
    wheel = next(dist.glob("modelctl-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for shipped in SHIPPED:
        assert shipped in names, shipped

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    py = venv / "bin" / "python"
    inner = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                           capture_output=True, text=True, check=True).stdout.strip()
    # appended after the venv's own site-packages: the wheel installed here wins over any other modelctl
    (venv / inner.split(str(venv) + "/", 1)[1] / "outer-site.pth").write_text("\n".join(outer_site_dirs()) + "\n")
    install = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-index", "--no-warn-script-location",
                              str(wheel)], capture_output=True, text=True)
    assert install.returncode == 0, install.stdout + install.stderr  # a dependency outside its declared range fails
    check = subprocess.run([str(py), "-m", "pip", "check"], capture_output=True, text=True)
    ours = [line for line in check.stdout.splitlines() if line.lower().startswith("modelctl ")]
    assert ours == [], ours
    where = subprocess.run([str(py), "-c", "import modelctl; print(modelctl.__file__)"], cwd=tmp_path,
                           capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(venv))  # the installed wheel, not the source tree
    proc = subprocess.run([str(venv / "bin" / "modelctl"), "init", str(tmp_path / "reg")], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "reg" / "modelctl.yaml").read_text().startswith("# modelctl registry configuration")
    assert (tmp_path / "reg" / "deployments").is_dir()
    version = subprocess.run([str(venv / "bin" / "modelctl"), "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.strip() == "modelctl 0.1.0", version
