"""The package installs as declared: console scripts, and shaders/assets found from any install."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
COMMANDS = ["splat-train", "splat-render", "splat-metrics", "splat-view", "splat-convert", "splat-edit"]


def test_shaders_and_assets_from_the_checkout():
    from assets import asset_bytes
    from shaders import shader_source

    assert shader_source("blit.vert").startswith("#version 430 core")
    assert asset_bytes("icon.png")[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(FileNotFoundError, match="nosuch.frag"):
        shader_source("nosuch.frag")


def test_regular_install_ships_shaders_and_assets(tmp_path):
    """``pip install .`` (not editable) into a fresh folder; imported from there, not the checkout."""
    # Build from a copy: setuptools writes build/ and *.egg-info into the source tree.
    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", "build", "*.egg-info", "__pycache__", ".data", ".whl", ".gl", ".pytest_cache"))
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                    "--quiet", "--target", str(target), str(source)], check=True)
    probe = ("import shaders, assets, rasterizer;"
             "assert not shaders.__file__.startswith(%r), shaders.__file__;"
             "print(len(shaders.shader_source('blit.frag')), len(assets.asset_bytes('icon.png')))") % str(REPO)
    env = dict(os.environ, PYTHONPATH=str(target))
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env,
                            capture_output=True, text=True, check=True)
    shader_length, icon_length = map(int, result.stdout.split())
    assert shader_length > 50 and icon_length > 100


@pytest.mark.parametrize("command", COMMANDS)
def test_console_scripts_are_installed(command):
    from importlib.metadata import entry_points

    names = {ep.name for ep in entry_points(group="console_scripts")}
    assert command in names


def test_splat_convert_entry_point_and_its_pip_only_dependency(capsys):
    """The console script reaches the real command (no -s: argument error, exit 2), and
    pycolmap, which it needs, is a main dependency: ``pip install`` alone gives a working one."""
    from importlib.metadata import entry_points

    (entry,) = [ep for ep in entry_points(group="console_scripts") if ep.name == "splat-convert"]
    with pytest.raises(SystemExit) as info:
        entry.load()([])
    assert info.value.code == 2 and "--source_path" in capsys.readouterr().err
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert "pycolmap" in project["dependencies"]
