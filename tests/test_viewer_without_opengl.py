"""splat-view where PyOpenGL finds no OpenGL library, as on a headless GPU server that has the
driver's EGL but neither libOpenGL nor libGL: one line naming what is missing, exit 1, for each
way of viewing (a window, --offscreen, --connect, --train). The child process refuses to load
those libraries before anything imports OpenGL."""

import os
import subprocess
import sys

import pytest

from conftest import SHARED_DATA
from test_viewer_cli import write_model

WITHOUT_GL = """
import ctypes, sys

load = ctypes.CDLL.__init__
MISSING = ("libOpenGL.so", "libGL.so", "libGLESv2.so", "libGLESv1_CM.so")

def refuse(self, name, *args, **kwargs):
    if isinstance(name, str) and name.startswith(MISSING):
        raise OSError(f"{name}: cannot open shared object file: No such file or directory")
    load(self, name, *args, **kwargs)

ctypes.CDLL.__init__ = refuse
from viewer.cli import main
sys.exit(main(sys.argv[1:]))
"""


def run_without_gl(*args, platform=None):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "PYOPENGL_PLATFORM")}
    if platform:
        env["PYOPENGL_PLATFORM"] = platform
    return subprocess.run([sys.executable, "-c", WITHOUT_GL, *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder, _ = write_model(tmp_path_factory.mktemp("nogl") / "model", 7, "/nonexistent")
    return folder


def assert_one_line(result, start: str):
    """Exit 1 and one error line (after any notices), no traceback."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and lines, result.stderr
    assert [line for line in lines if "error" in line] == lines[-1:], result.stderr
    assert lines[-1].startswith(f"splat-view: error: {start}: PyOpenGL found no libOpenGL.so.0 or libGL.so.1")


@pytest.mark.parametrize("platform", [None, "egl"])
def test_a_window_without_an_opengl_library_is_one_line(model, platform):
    assert_one_line(run_without_gl("-m", model, "--backend", "gl", platform=platform), "no OpenGL library")


def test_offscreen_without_an_opengl_library_is_one_line(model, tmp_path):
    result = run_without_gl("-m", model, "--backend", "gl", "--offscreen", "--frames", 1,
                            "--screenshot", tmp_path / "shot.png")
    assert_one_line(result, "no offscreen OpenGL context")
    assert not (tmp_path / "shot.png").exists()


def test_connect_without_an_opengl_library_is_one_line():
    assert_one_line(run_without_gl("--connect", "127.0.0.1:6009"), "no OpenGL library")


def test_connect_checks_the_address_before_opengl():
    result = run_without_gl("--connect", "localhost:notaport")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("splat-view: error: --connect") and "HOST:PORT" in lines[0]


def test_training_viewer_without_an_opengl_library_is_one_line(tmp_path):
    source = SHARED_DATA / "shapes"
    if not source.is_dir():
        pytest.skip(f"no scene at {source}")
    result = run_without_gl("--train", "-s", source, "-m", tmp_path / "m", "--iterations", 1, "--frames", 1,
                            "--quiet")
    assert_one_line(result, "no OpenGL library")
