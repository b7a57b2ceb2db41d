"""What every way of starting the viewer shares (``splat-view``, ``--train``, ``--connect``): the
common flags, the choice of backend and CUDA device, and opening the control panel."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Sequence

from trainer.arg_types import int_range

from .options import BACKENDS, NAVIGATION_MODES, RENDER_MODES, UP_AXES

if TYPE_CHECKING:
    from .app import ViewerApp

__all__ = ["add_view_flags", "open_panel", "choose_backend", "usable_backends"]


MAX_RENDERING_SIDE = 16384   # pixels; the largest texture OpenGL 4.3 drivers commonly allow


def add_view_flags(parser: argparse.ArgumentParser, frames_help: str = "render this many frames, then exit") -> None:
    """The flags every way of viewing shares: size, start camera, render mode, navigation,
    scripted frames."""
    parser.add_argument("--rendering-size", type=int_range(1, MAX_RENDERING_SIDE), nargs=2, metavar=("W", "H"),
                        help="render at this size whatever the window's (default: the window's; it opens at width "
                             "min(1200, first camera width), that camera's aspect, shrunk to fit the screen)")
    parser.add_argument("--camera", type=int_range(0), default=0, help="start at input camera N")
    parser.add_argument("--render-mode", choices=RENDER_MODES, default="splats",
                        help="splats (default), ellipsoids, initial_points or depth")
    parser.add_argument("--navigation", choices=NAVIGATION_MODES, default="fps",
                        help="mouse navigation: fps (default, SIBR's), orbit or trackball; N switches")
    parser.add_argument("--up", choices=UP_AXES, default="auto", metavar="{" + ",".join(UP_AXES) + "}",
                        help="world up: auto (the input cameras'; -y for a bare PLY, graphdeco's convention) or "
                             "an axis, e.g. +y for a y-up PLY that opens upside down")
    parser.add_argument("--frames", type=int_range(1), help=frames_help)
    parser.add_argument("--screenshot", help="with --frames: save the last frame here (PNG)")


def open_panel(app: "ViewerApp", stats_source=None, sections: Sequence = ()):
    """The control panel of ``app`` (where its layout puts it, with the camera path section and
    ``sections``), or None (one notice) when it cannot be created."""
    try:
        from .navigation.path_panel import CameraPathSection  # noqa: PLC0415 - Dear PyGui only when wanted
        from .window.panel import ControlPanel  # noqa: PLC0415

        layout = app.layout
        panel = ControlPanel(app.state, stats_source=stats_source, rect=layout.panel if layout else None,
                             sections=[CameraPathSection(app.path_editor), *sections],
                             actions={"help": app.toggle_help, "quit": app.quit},
                             visible=layout.panel_visible if layout else True)
        if not panel.visible:   # hidden when the last session ended
            app.notify("the control panel is hidden: Tab or the right-click menu shows it")
        return panel
    except Exception as error:  # noqa: BLE001 - the viewer works without its panel
        print(f"splat-view: notice: no control panel ({error}); continuing without it", file=sys.stderr)
        return None


def load_viewer_app(offscreen: bool = False) -> "type[ViewerApp]":
    """The ``ViewerApp`` class, imported once PyOpenGL has found an OpenGL library; raises
    ``SurfaceError`` (a RuntimeError, one line for the user) when it has not. ``offscreen``: the
    EGL platform is selected."""
    from .window.surfaces import require_opengl_library  # noqa: PLC0415

    require_opengl_library(offscreen)
    from .app import ViewerApp  # noqa: PLC0415 - imports OpenGL

    return ViewerApp


def choose_backend(requested: str, device_index: int):
    """(backend name, CUDA device or None) for ``--backend`` and ``--device``; raises ValueError
    when ``cuda`` was asked for and cannot be used."""
    import torch  # noqa: PLC0415

    from rasterizer.render import available_backends  # noqa: PLC0415

    cuda_ok = torch.cuda.is_available() and "cuda" in available_backends()
    if requested == "cuda" and not cuda_ok:
        raise ValueError("--backend cuda: no usable NVIDIA GPU or the CUDA backend is not installed "
                         "(pip install 'splatview[cuda]'); use --backend gl")
    if cuda_ok and not 0 <= device_index < torch.cuda.device_count():
        raise ValueError(f"--device {device_index}: there are {torch.cuda.device_count()} CUDA devices")
    backend = requested if requested != "auto" else ("cuda" if cuda_ok else "gl")
    device = torch.device("cuda", device_index) if cuda_ok else None
    if device is not None:
        torch.cuda.set_device(device)
    return backend, device


def usable_backends(device) -> tuple[str, ...]:
    """The backends the panel offers: all with a CUDA device, else the OpenGL ones."""
    return BACKENDS if device is not None else tuple(b for b in BACKENDS if b != "cuda")
