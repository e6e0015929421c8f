"""The wheel ships schemas and the registry template: install it in a fresh virtualenv and init."""
import subprocess
import sys
import zipfile

from conftest import ROOT


def test_wheel_installs_and_inits(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist),
                    str(ROOT)], check=True, capture_output=True)
    wheel = next(dist.glob("modelctl-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for shipped in ("modelctl/data/schemas/bundle.schema.json", "modelctl/data/schemas/registry.schema.json",
                    "modelctl/data/schemas/deployment.schema.json", "modelctl/data/schemas/eval-report.schema.json",
                    "modelctl/data/registry-template/modelctl.yaml", "modelctl/data/registry-template/README.md"):
        assert shipped in names, shipped
    venv = tmp_path / "venv"
    # dependencies come from the running interpreter's site-packages; the wheel itself is installed fresh
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(wheel)], check=True,
                   capture_output=True)
    where = subprocess.run([str(py), "-c", "import modelctl; print(modelctl.__file__)"], cwd=tmp_path,
                           capture_output=True, text=True, check=True).stdout
    assert str(venv) in where  # the installed wheel, not the source tree
    proc = subprocess.run([str(venv / "bin" / "modelctl"), "init", str(tmp_path / "reg")], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "reg" / "modelctl.yaml").read_text().startswith("# modelctl registry configuration")
    assert (tmp_path / "reg" / "deployments").is_dir()
