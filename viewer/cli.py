"""``splat-view``: look at a trained model (``-m MODEL``) or a bare ``.ply`` file.

    splat-view -m output/garden [--iteration N] [--rendering-size W H]
    splat-view path/to/point_cloud.ply
    splat-view -m output/garden --camera 3 --frames 10 --screenshot view3.png   # scripted
    splat-view --connect 127.0.0.1:6009     # watch splat-train (or the reference's train.py)

A Dear PyGui control panel opens next to the render window unless ``--hide-panel`` or
``--frames`` is given. This version draws with the OpenGL path: ``--render-mode`` picks splats
(default), ellipsoids (SIBR's), initial_points or depth; the CUDA path arrives later.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from rasterizer.files import FileFormatError

from .scene_source import load_viewer_input
from .state import RENDER_MODES, ViewerState


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="splat-view", description=__doc__.split("\n")[0])
    parser.add_argument("path", nargs="?", help="a model folder or a .ply file")
    parser.add_argument("-m", "--model-path", "--model_path", dest="model_path", help="trained model folder")
    parser.add_argument("--iteration", type=int, default=-1, help="-1: the largest saved iteration")
    parser.add_argument("--rendering-size", type=int, nargs=2, metavar=("W", "H"),
                        help="default: width min(1200, first camera width), that camera's aspect")
    parser.add_argument("--camera", type=int, default=0, help="start at input camera N")
    parser.add_argument("--render-mode", choices=RENDER_MODES, default="splats",
                        help="splats (default), ellipsoids, initial_points or depth")
    parser.add_argument("--frames", type=int, help="render this many frames, then exit")
    parser.add_argument("--screenshot", help="with --frames: save the last frame here (PNG)")
    parser.add_argument("--connect", metavar="HOST:PORT",
                        help="watch a running splat-train (or graphdeco's train.py) through its network viewer port")
    parser.add_argument("--reference-protocol", action="store_true",
                        help="with --connect: never ask for splatview's extension (trainer-side images only)")
    parser.add_argument("--hide-panel", action="store_true",
                        help="no control panel (it opens by default when the window is shown, not with --frames)")
    return parser


def open_panel(state: ViewerState, stats_source=None, remote: bool = False):
    """The Dear PyGui control panel, or None (one notice) when it cannot be created."""
    try:
        from .panel import ControlPanel  # noqa: PLC0415 - Dear PyGui only when a panel is wanted

        return ControlPanel(state, stats_source=stats_source, remote=remote)
    except Exception as error:  # noqa: BLE001 - the viewer works without its panel
        print(f"splat-view: notice: no control panel ({error}); continuing without it", file=sys.stderr)
        return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.screenshot and args.frames is None:
        parser.error("--screenshot needs --frames K")
    if args.connect:
        if args.model_path or args.path:
            parser.error("--connect shows the trainer's model: give no model folder or .ply")
        from .remote_view import run_connected  # noqa: PLC0415

        return run_connected(args)
    target = args.model_path or args.path
    if not target or (args.model_path and args.path):
        parser.error("give one model folder (-m MODEL) or one .ply file")
    try:
        viewer_input = load_viewer_input(target, args.iteration)
        cameras = viewer_input.cameras
        if not 0 <= args.camera < len(cameras):
            raise ValueError(f"--camera {args.camera}: the model has {len(cameras)} input cameras")
        state = ViewerState.from_input_camera(cameras, args.camera, background=viewer_input.background,
                                              max_sh_degree=viewer_input.gaussians.sh_degree,
                                              sh_degree=viewer_input.gaussians.sh_degree,
                                              render_mode=args.render_mode)
        if args.rendering_size:
            state.width, state.height = args.rendering_size
        from .app import ViewerApp  # noqa: PLC0415 - GLFW/OpenGL only once the inputs are fine

        app = ViewerApp(viewer_input, state, visible=args.frames is None)
    except (OSError, FileFormatError, ValueError, RuntimeError) as error:
        print(f"splat-view: error: {error}", file=sys.stderr)
        return 1
    if args.frames is None and not args.hide_panel:
        app.panel = open_panel(state)
    try:
        app.run(args.frames, args.screenshot)
    finally:
        app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
