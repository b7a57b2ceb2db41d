"""``splat-view``: look at a trained model (``-m MODEL``) or a bare ``.ply`` file.

    splat-view -m output/garden [--iteration N] [-s SOURCE] [--rendering-size W H]
               [--backend cuda|gl] [--device N] [--no_interop]
    splat-view path/to/point_cloud.ply
    splat-view -m output/garden --camera 3 --frames 10 --screenshot view3.png   # scripted
    splat-view -s path/to/scene --train -m output/garden [splat-train flags]   # train in the viewer
    splat-view --connect 127.0.0.1:6009     # watch splat-train (or the reference's train.py)

A Dear PyGui control panel opens next to the render window unless ``--hide-panel`` or
``--frames`` is given. Splats are drawn by the CUDA rasterizer through CUDA-GL interop on NVIDIA
machines (``--no_interop``: through host memory), else by OpenGL instanced quads (``--backend
gl``) or OpenGL compute shaders (``--backend gl-compute``); ``--render-mode``
picks splats (default), ellipsoids (SIBR's), initial_points or depth. ``--offscreen`` draws into
a headless EGL framebuffer instead of a window (with ``--frames``; for servers without display).
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from rasterizer.files import FileFormatError
from trainer.arg_types import int_range

from .scene_source import load_viewer_input
from .state import BACKENDS, RENDER_MODES, ViewerState

MAX_RENDERING_SIDE = 16384   # pixels; the largest texture OpenGL 4.3 drivers commonly allow


def add_view_flags(parser: argparse.ArgumentParser, frames_help: str = "render this many frames, then exit") -> None:
    """The flags every way of viewing shares: size, start camera, render mode, scripted frames."""
    parser.add_argument("--rendering-size", type=int_range(1, MAX_RENDERING_SIDE), nargs=2, metavar=("W", "H"),
                        help="default: width min(1200, first camera width), that camera's aspect")
    parser.add_argument("--camera", type=int_range(0), default=0, help="start at input camera N")
    parser.add_argument("--render-mode", choices=RENDER_MODES, default="splats",
                        help="splats (default), ellipsoids, initial_points or depth")
    parser.add_argument("--frames", type=int_range(1), help=frames_help)
    parser.add_argument("--screenshot", help="with --frames: save the last frame here (PNG)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="splat-view", description=__doc__.split("\n")[0])
    parser.add_argument("path", nargs="?", help="a model folder or a .ply file")
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


def open_panel(state: ViewerState, stats_source=None, remote: bool = False):
    """The Dear PyGui control panel, or None (one notice) when it cannot be created."""
    try:
        from .panel import ControlPanel  # noqa: PLC0415 - Dear PyGui only when a panel is wanted

        return ControlPanel(state, stats_source=stats_source, remote=remote)
    except Exception as error:  # noqa: BLE001 - the viewer works without its panel
        print(f"splat-view: notice: no control panel ({error}); continuing without it", file=sys.stderr)
        return None


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


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--train" in argv:  # in-viewer training takes every splat-train flag: its own parser
        from .live_cli import main as train_main  # noqa: PLC0415

        return train_main(argv)
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
    if args.offscreen and args.frames is None:
        parser.error("--offscreen needs --frames K (there is no window to close)")
    if args.offscreen:
        from .egl_context import require_egl_platform  # noqa: PLC0415

        require_egl_platform()   # before anything imports OpenGL
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
                                              available_backends=usable_backends(device))
        if args.rendering_size:
            state.width, state.height = args.rendering_size
        from .app import ViewerApp  # noqa: PLC0415 - GLFW/OpenGL only once the inputs are fine

        app = ViewerApp(viewer_input, state, visible=args.frames is None, offscreen=args.offscreen,
                        device=device, interop=not args.no_interop)
    except (OSError, FileFormatError, ValueError, RuntimeError) as error:
        print(f"splat-view: error: {error}", file=sys.stderr)
        return 1
    if args.frames is None and not args.hide_panel and not args.offscreen:
        app.panel = open_panel(state)
    try:
        app.run(args.frames, args.screenshot)
    finally:
        app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
