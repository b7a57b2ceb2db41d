"""``splat-view --train``: train a scene inside the viewer, watching the Gaussians change.

    splat-view -s SOURCE --train -m OUT [any splat-train flag] [viewer flags below]

Training flags are parsed by splat-train's own parser (same names, same defaults) and the run
writes what ``splat-train`` writes (model folder, cfg_args, cameras.json, input.ply,
point_cloud/iteration_N, checkpoints). Training runs in a background thread
(:class:`viewer.live.session.TrainingSession`); the render window shows its latest snapshot and
the control panel gets a training section (start/pause, single step, save now, statistics).

Closing the window (or ``--frames K`` running out) stops an unfinished run as Ctrl-C does in
splat-train: ``point_cloud/iteration_<k>`` for the iteration under way and ``chkpnt<k-1>.pth``.

Exit status: 0 when the window was closed (training finished or stopped with its save), 130
after Ctrl-C in the terminal and 143 after SIGTERM (saved the same way), 1 on a training error, out of memory, or a
file/scene/window error, 2 for flags that cannot be used (splat-train's convention).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from typing import TYPE_CHECKING, Sequence

from trainer.arg_types import float_range
from trainer.config import ConfigError, TrainConfig, build_parser as build_train_parser, parse_args

from ..launch import add_view_flags

if TYPE_CHECKING:   # torch and the trainer load only after the flags are read (--help is quick)
    from ..scene_source import ViewerInput
    from ..state import ViewerState
    from .session import TrainingSession

__all__ = ["main", "parse", "build_parser", "LiveModel"]

MAX_FPS = 30.0           # the render loop leaves the CPU (and the GIL) to training


def build_parser() -> argparse.ArgumentParser:
    """The viewer's own flags in training mode (everything else goes to splat-train's parser).
    No abbreviations, so that no splat-train flag is taken for a viewer flag."""
    parser = argparse.ArgumentParser(prog="splat-view --train", add_help=False, allow_abbrev=False,
                                     description="Train in the viewer: splat-view -s SOURCE --train -m OUT "
                                                 "[splat-train flags]")
    parser.add_argument("-h", "--help", action="store_true", help="this help and splat-train's flags")
    parser.add_argument("--train", action="store_true", help="train -s SOURCE in the viewer")
    add_view_flags(parser, "render this many frames, then stop training (with its save) and exit")
    parser.add_argument("--hide-panel", action="store_true", help="no control panel")
    parser.add_argument("--start-paused", action="store_true", help="wait for Start (or Step) before iteration 1")
    parser.add_argument("--max-fps", type=float_range(0.0), default=MAX_FPS,
                        help=f"cap on the render loop's frame rate (default {MAX_FPS:g}; 0: none)")
    return parser


def parse(argv: Sequence[str]) -> tuple[argparse.Namespace, TrainConfig]:
    """Split ``argv`` into the viewer's flags and splat-train's :class:`TrainConfig`. Exits with
    argparse's status 2 and one error line for an unknown or bad flag; ``-h`` prints both helps."""
    parser = build_parser()
    args, rest = parser.parse_known_args(list(argv))
    train_parser = build_train_parser(prog="splat-view --train")
    if args.help:
        print(parser.format_help())
        print(train_parser.format_help())
        raise SystemExit(0)
    _, unknown = train_parser.parse_known_args(rest)   # bad values exit here, named as splat-view
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.screenshot and args.frames is None:
        parser.error("--screenshot needs --frames K")
    return args, parse_args(rest)


class LiveModel:
    """A ViewerApp frame callback: swap in the session's latest snapshot (whole, by version)
    and cap the frame rate at ``max_fps`` (frames per second; 0 or less: no cap)."""

    def __init__(self, session: TrainingSession, max_fps: float = MAX_FPS):
        self.session = session
        self.version = session.snapshot().version
        self.min_frame_s = 1.0 / max_fps if max_fps > 0 else 0.0
        self._last = time.perf_counter()

    def __call__(self, app) -> None:
        snapshot = self.session.snapshot()
        if snapshot.version != self.version:
            app.set_gaussians(snapshot.gaussians)
            self.version = snapshot.version
        wait = self._last + self.min_frame_s - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        self._last = time.perf_counter()


def viewer_setup(session: TrainingSession, args: argparse.Namespace) -> tuple[ViewerInput, ViewerState]:
    """What the window opens on: the initial model, the run's cameras.json cameras, the scene's
    background and initial points."""
    import torch  # noqa: PLC0415

    from ..scene_source import ViewerInput  # noqa: PLC0415
    from ..state import ViewerState  # noqa: PLC0415

    scene = session.trainer.scene
    gaussians = session.snapshot().gaussians
    cameras = session.cameras()
    if not 0 <= args.camera < len(cameras):
        raise ValueError(f"--camera {args.camera}: the scene has {len(cameras)} input cameras")
    viewer_input = ViewerInput(gaussians, cameras, tuple(scene.background), f"training {session.model_path}",
                               scene.point_cloud)
    from ..launch import choose_backend, usable_backends  # noqa: PLC0415

    # splat-train's own --backend picks the training rasterizer; the view takes the best one here.
    backend, device = choose_backend("auto", torch.cuda.current_device() if torch.cuda.is_available() else 0)
    state = ViewerState.from_input_camera(cameras, args.camera, background=viewer_input.background,
                                          max_sh_degree=gaussians.sh_degree, sh_degree=gaussians.sh_degree,
                                          render_mode=args.render_mode, backend=backend,
                                          available_backends=usable_backends(device),
                                          navigation=args.navigation)
    if args.rendering_size:
        state.width, state.height = args.rendering_size
    return viewer_input, state


def main(argv: Sequence[str] | None = None) -> int:
    args, config = parse(sys.argv[1:] if argv is None else argv)
    from rasterizer.files import FileFormatError  # noqa: PLC0415

    from .session import TrainingSession  # noqa: PLC0415

    if not config.script.quiet:
        print("Optimizing " + config.model.model_path)
    session = TrainingSession(config, start_paused=args.start_paused)
    try:
        session.setup()
        viewer_input, state = viewer_setup(session, args)
        from ..launch import load_viewer_app  # noqa: PLC0415

        ViewerApp = load_viewer_app()  # noqa: N806 - GLFW/OpenGL only once the inputs are fine
        interactive = args.frames is None
        app = ViewerApp(viewer_input, state, visible=interactive, interactive=interactive,
                        fixed_size=args.rendering_size is not None, with_panel=not args.hide_panel)
        state.update(up=args.up)   # an explicit axis levels the view to it
    except ConfigError as error:
        session.stop()
        print(f"splat-view: error: {error}", file=sys.stderr)
        return 2
    except (OSError, FileFormatError, ValueError, RuntimeError) as error:
        session.stop()
        print(f"splat-view: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:   # before training started: nothing worth saving yet
        session.stop()
        print("splat-view: interrupted before training started", file=sys.stderr)
        return 130
    if args.frames is None and not args.hide_panel:
        from ..launch import open_panel  # noqa: PLC0415
        from .panel import TrainingSection  # noqa: PLC0415 - Dear PyGui only when a panel is wanted

        app.panel = open_panel(app, sections=[TrainingSection(session)])
    app.frame_callbacks.append(LiveModel(session, args.max_fps))
    session.start()
    code = 0
    terminated = []

    def on_sigterm(signum, frame):   # SIGTERM (batch systems, `timeout`) stops as Ctrl-C does
        terminated.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        app.run(args.frames, args.screenshot)
    except KeyboardInterrupt:
        code = 143 if terminated else 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        app.close()
    try:
        result = session.stop()   # an unfinished run saves as after Ctrl-C in splat-train
    except KeyboardInterrupt:     # a second Ctrl-C: don't wait for the iteration under way
        print("splat-view: interrupted again: exiting without the final save (files already "
              "written are complete)", file=sys.stderr)
        return 130
    if session.error or (result is not None and result.status == "out_of_memory"):
        return 1
    return code
