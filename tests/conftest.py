"""Shared test fixtures (kept small and generic)."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

# ../shared/data beside the checkout; SPLATVIEW_SHARED_DATA points elsewhere (e.g. a copy carried
# to a GPU machine).
SHARED_DATA = Path(os.environ.get("SPLATVIEW_SHARED_DATA", Path(__file__).parent.parent.parent / "shared" / "data"))


def _training_on_the_cpu():
    """Train on the CPU even where CUDA exists (the trainer picks CUDA when it is available):
    bit-for-bit claims are the CPU's, since the GPU adds gradients with atomics in varying order."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("torch.cuda.is_available", lambda: False)
        yield


cpu_only = pytest.fixture(_training_on_the_cpu)
cpu_only_module = pytest.fixture(scope="module")(_training_on_the_cpu)


@pytest.fixture
def shared_data():
    """``name -> Path`` of a scene in ``../shared/data``; skips the test when it is absent."""
    return shared_scene


def shared_scene(name: str) -> Path:
    """The scene ``name`` of ``../shared/data``; skips the calling test when it is absent."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"development data {path} not available")
    return path


def _xvfb(size: str):
    """Start ``Xvfb -displayfd`` (it picks a free display) with one screen of ``size`` (WxHxD);
    yields the display name."""
    if not shutil.which("Xvfb"):
        pytest.skip("Xvfb not installed (apt-get install xvfb)")
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-screen", "0", size,
                             "-nolisten", "tcp", "-noreset"], pass_fds=(write_fd,),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        number = pipe.readline().strip()   # blocks until the server accepts connections
    if not number:
        proc.kill()
        proc.wait()
        pytest.skip("Xvfb failed to start")
    yield f":{number}"
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="session")
def xvfb_display():
    """An Xvfb screen of 640x480; DISPLAY points at it for the session."""
    for display in _xvfb("640x480x24"):
        old = os.environ.get("DISPLAY")
        os.environ["DISPLAY"] = display
        yield display
        if old is None:
            os.environ.pop("DISPLAY", None)
        else:
            os.environ["DISPLAY"] = old


@pytest.fixture(scope="session")
def small_screen():
    """A second Xvfb of 1366x768, a common laptop screen (its name; DISPLAY is left alone)."""
    yield from _xvfb("1366x768x24")


@pytest.fixture(scope="module")
def gl_context(xvfb_display):
    """A hidden GLFW window (128x96) with a current GL 4.3 core context, one per test module."""
    glfw = pytest.importorskip("glfw")
    pytest.importorskip("OpenGL.GL")
    from viewer.window.gl_context import create_hidden_window

    window = create_hidden_window(128, 96)
    if window is None:
        pytest.skip("cannot create a GL 4.3 core context")
    yield window
    glfw.destroy_window(window)
    glfw.terminate()
