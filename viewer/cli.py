"""``splat-view``: look at a trained model (``-m MODEL``) or a model file (.ply, compressed .ply, .splat, .spz).

The one entry point of the viewer: it parses the command line and hands over to the mode asked
for (a model or PLY here, ``--train`` to ``viewer/live/command.py``, ``--connect`` to
``viewer/network/view.py``); nothing imports it. Heavy modules (torch, GL, Dear PyGui) are
imported only after the flags are read, so that ``--help`` and flag errors answer at once.
"""

from __future__ import annotations

import argparse
import gc
import sys
from typing import Sequence

from trainer.arg_types import int_range

from .launch import add_view_flags
from .options import BACKENDS, key_help_lines

DESCRIPTION = """Look at a trained 3D Gaussian Splatting model or a model file (.ply, compressed .ply,
.splat, .spz: recognised by content), and clean, crop and save it from the panel's Edit section.

  splat-view -m output/garden              a model folder, as SIBR's gaussian viewer
  splat-view point_cloud.ply               a bare model file (cameras from -s, else one framing it)
  splat-view -s SCENE --train -m OUT       train in the viewer (splat-view --train --help)
  splat-view --connect 127.0.0.1:6009      watch splat-train (or graphdeco's train.py)
  splat-view -m MODEL --camera 3 --frames 10 --screenshot view3.png     scripted

A control panel opens beside the render window (Tab hides and shows it; --hide-panel: none).
Splats are drawn by the CUDA rasterizer through CUDA-GL interop on NVIDIA machines, else by
OpenGL; --render-mode picks splats, ellipsoids, initial_points or depth. --offscreen draws into
a headless EGL framebuffer (with --frames; for servers without a display)."""


def _epilog() -> str:
    rows = key_help_lines()
    width = max(len(keys) for keys, _ in rows) + 2
    lines = ["keys and mouse in the render window (H or F1 shows them there):"]
    lines += [f"  {keys:<{width}}{meaning}" for keys, meaning in rows]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="splat-view", description=DESCRIPTION, epilog=_epilog(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", nargs="?", help="a model folder or a model file (.ply, compressed .ply, "
                                                 ".splat, .spz; recognised by content)")
    parser.add_argument("-m", "--model-path", "--model_path", dest="model_path", help="trained model folder")
    parser.add_argument("--iteration", type=int_range(-1), default=-1, help="-1: the largest saved iteration")
    parser.add_argument("-s", "--path", "--source_path", dest="source_path",
                        help="dataset whose cameras to use (default: cfg_args' source_path, else cameras.json)")
    parser.add_argument("--backend", choices=("auto", *BACKENDS), default="auto",
                        help="cuda (CUDA rasterizer + interop), gl (OpenGL instanced quads) or gl-compute "
                             "(OpenGL compute shaders, for GPUs with few graphics units); auto: cuda when usable, else gl")
    parser.add_argument("--device", type=int_range(0), default=0, help="CUDA device index (default 0)")
    parser.add_argument("--no_interop", "--no-interop", dest="no_interop", action="store_true",
                        help="copy CUDA frames through host memory instead of CUDA-GL interop")
    parser.add_argument("--offscreen", action="store_true",
                        help="draw into a headless EGL framebuffer (needs --frames; no window, no panel)")
    add_view_flags(parser)
    parser.add_argument("--connect", metavar="HOST:PORT",
                        help="watch a running splat-train (or graphdeco's train.py) through its network viewer port")
    parser.add_argument("--reference-protocol", action="store_true",
                        help="with --connect: never ask for splatview's extension (trainer-side images only)")
    parser.add_argument("--hide-panel", action="store_true",
                        help="no control panel (it opens by default when the window is shown, not with --frames)")
    parser.add_argument("--train", action="store_true",
                        help="train -s SOURCE in the viewer with splat-train's flags (splat-view --train --help)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The ``splat-view`` command; ``argv`` given: a call from Python (tests), not a program."""
    if argv is not None:
        return _dispatch(list(argv))
    try:
        return _dispatch(sys.argv[1:])
    finally:
        # Python's final garbage collection walks every object torch and the GL bindings made
        # (about 0.9 s here); the windows and files are closed by now, so skip it: quitting then
        # takes about 0.3 s.
        gc.freeze()


def _dispatch(argv: list[str]) -> int:
    if "--train" in argv:  # in-viewer training takes every splat-train flag: its own parser
        from .live.command import main as train_main  # noqa: PLC0415

        return train_main(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.screenshot and args.frames is None:
        parser.error("--screenshot needs --frames K")
    if args.connect:
        if args.model_path or args.path:
            parser.error("--connect shows the trainer's model: give no model folder or model file")
        return connect(args)
    target = args.model_path or args.path
    if not target or (args.model_path and args.path):
        parser.error("give one model folder (-m MODEL) or one model file")
    if args.offscreen and args.frames is None:
        parser.error("--offscreen needs --frames K (there is no window to close)")
    return view_model(args, target)


def connect(args: argparse.Namespace) -> int:
    """``splat-view --connect HOST:PORT`` once the flags are fine; returns the exit code."""
    from .network.client import parse_address  # noqa: PLC0415
    from .window.surfaces import SurfaceError, require_opengl_library  # noqa: PLC0415

    try:
        address = parse_address(args.connect)
        require_opengl_library(offscreen=False)
    except (ValueError, SurfaceError) as error:
        print(f"splat-view: error: {error}", file=sys.stderr)
        return 1
    from .network.view import run_connected  # noqa: PLC0415 - imports OpenGL

    return run_connected(args, address)


def view_model(args: argparse.Namespace, target: str) -> int:
    """``splat-view MODEL|PLY`` once the flags are fine; returns the exit code."""
    if args.offscreen:
        from .window.egl_context import require_egl_platform  # noqa: PLC0415

        require_egl_platform()   # before anything imports OpenGL
    from rasterizer.files import FileFormatError  # noqa: PLC0415 - torch: after the flags are read

    from .launch import choose_backend, load_viewer_app, open_panel, usable_backends  # noqa: PLC0415
    from .scene_source import load_viewer_input  # noqa: PLC0415
    from .state import ViewerState  # noqa: PLC0415

    interactive = args.frames is None
    try:
        backend, device = choose_backend(args.backend, args.device)
        viewer_input = load_viewer_input(target, args.iteration, args.source_path)
        cameras = viewer_input.cameras
        if not 0 <= args.camera < len(cameras):
            raise ValueError(f"--camera {args.camera}: the model has {len(cameras)} input cameras")
        state = ViewerState.from_input_camera(cameras, args.camera, background=viewer_input.background,
                                              max_sh_degree=viewer_input.gaussians.sh_degree,
                                              sh_degree=viewer_input.gaussians.sh_degree,
                                              render_mode=args.render_mode, backend=backend,
                                              available_backends=usable_backends(device),
                                              navigation=args.navigation)
        if args.rendering_size:
            state.width, state.height = args.rendering_size
        ViewerApp = load_viewer_app(args.offscreen)  # noqa: N806 - GLFW/OpenGL only once the inputs are fine
        app = ViewerApp(viewer_input, state, visible=interactive, offscreen=args.offscreen, device=device,
                        interop=not args.no_interop, interactive=interactive,
                        fixed_size=args.rendering_size is not None, with_panel=not args.hide_panel)
        state.update(up=args.up)   # an explicit axis levels the view to it
    except (OSError, FileFormatError, ValueError, RuntimeError) as error:
        print(f"splat-view: error: {error}", file=sys.stderr)
        return 1
    if interactive and not args.hide_panel and not args.offscreen:
        from .edit.panel import attach_editing, edit_source  # noqa: PLC0415

        editing = attach_editing(app, edit_source(viewer_input, target, args.iteration))
        app.panel = open_panel(app, sections=[editing])
    try:
        app.run(args.frames, args.screenshot)
    finally:
        app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
