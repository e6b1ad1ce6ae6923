"""A wheel built from the checkout works as well as the checkout: every subpackage is in it
(onepass.model.training for evaluate and finetune), with the bundled model's files."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_a_wheel_installed_apart_from_the_checkout_runs_every_command(tmp_path):
    import shutil

    # from a copy of the source tree: a checkout's own build/ folder may hold files of older builds
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__", "runs", "out"))
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(src)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    [wheel] = (tmp_path / "dist").glob("onepass-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in ("onepass/model/training/recipe.py", "onepass/model/training/grammar.py", "onepass/pipeline/cli.py",
                   "onepass/model/default/model.safetensors", "onepass/model/default/onepass.json"):
        assert module in names, module
    # installed alone (its dependencies from this environment), run from a folder without the checkout
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    res = subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "--force-reinstall", str(wheel)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    code = ("import onepass.model.training.recipe as r, onepass.model.training.grammar, onepass.pipeline.evaluate, pathlib; "
            "print(pathlib.Path(r.__file__).resolve())")
    res = subprocess.run([str(py), "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert str(venv) in res.stdout and str(ROOT) not in res.stdout  # the wheel's copy, not the checkout's
    for args in (["evaluate", "--help"], ["finetune", "--help"]):
        res = subprocess.run([str(venv / "bin" / "onepass"), *args], capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert res.returncode == 0 and "Usage" in res.stdout, res.stderr[-2000:]
    res = subprocess.run([str(py), "-m", "onepass.pipeline.cli", "finetune", "--help"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 0 and "Usage" in res.stdout, res.stderr[-2000:]
