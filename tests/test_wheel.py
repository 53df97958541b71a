"""The wheel holds the presets, and an installed copy finds them (no checkout on the path).

    .venv/bin/python -m pytest tests/test_wheel.py -q
"""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
SOURCES = ["pyproject.toml", "README.md", "distill", "bornagain", "ensembles", "tuning", "results"]

LIST = """
import distill
from distill.cli import preset_lines
from distill.presets_config import preset_names, resolve_config_path
assert distill.__file__.startswith({target!r}), distill.__file__
assert str(resolve_config_path("hinton-mnist")).startswith({target!r})
print(" ".join(preset_names()))
print("\\n".join(preset_lines()))
"""


def test_wheel_ships_presets_and_the_installed_copy_finds_them(tmp_path):
    source = tmp_path / "src"  # build from a copy: the build writes build/ and *.egg-info next to the sources
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(ROOT / name, source / name)
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheels), str(source)], check=True)
    (wheel,) = wheels.glob("*.whl")
    presets = sorted(p.name for p in (ROOT / "distill" / "presets").glob("*.yaml"))
    inside = sorted(Path(n).name for n in zipfile.ZipFile(wheel).namelist() if n.startswith("distill/presets/"))
    assert presets and inside == presets

    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True)
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", LIST.format(target=str(target))], cwd=tmp_path, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    names, *lines = out.stdout.splitlines()
    assert names.split() == [p[:-len(".yaml")] for p in presets]
    assert any(line.startswith("hinton-mnist  (tune)") for line in lines)
    assert any("source: Furlanello et al. 2018" in line for line in lines)
