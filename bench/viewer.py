"""Viewer speed on a CUDA GPU, headless (EGL): frames per second of the render loop and the time
from launch to the first frame.

    python bench/viewer.py [--counts 1000000 3000000] [--frames 300] [--no-gsplat]

The loop is the viewer's own (``ViewerApp.draw`` + ``surface.swap``: render, CUDA-GL interop or
GL splatting, blit; vsync off) for each backend (cuda, cuda without interop, gl-compute, gl) drawing 1920x1080 frames into an offscreen framebuffer of an EGL
context on the GPU. FPS = frames / wall time, with the GPU drained (``glFinish`` and
``torch.cuda.synchronize``) before and after; the median of 3 runs. "static" keeps one pose
(the GL path then sorts once); "orbit" turns the camera 0.2 degrees every frame (the GL path
re-sorts every frame). The anchor is gsplat's forward rasterization alone (no display, no
copy), the per-frame cost of a gsplat-based viewer before it shows anything.

Launch to first frame: ``python -m viewer.cli MODEL.ply --offscreen --frames 1`` on a 1M
Gaussian PLY at 1920x1080, from the moment before the process is started to the first frame
finished on the GPU (the viewer prints it when ``SPLATVIEW_LAUNCH_TIME`` is set), run twice; the
second run has warm kernel and file caches.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from viewer.window.egl_context import require_egl_platform  # noqa: E402

require_egl_platform()   # before anything imports OpenGL

import torch  # noqa: E402
from OpenGL import GL  # noqa: E402

from bench.rasterizer import HEIGHT, WIDTH, gsplat_step, random_scene, time_ms  # noqa: E402
from rasterizer import Camera, look_at, write_ply  # noqa: E402
from viewer.app import ViewerApp  # noqa: E402
from viewer.navigation.controls import orbit  # noqa: E402
from viewer.scene_source import ViewerInput  # noqa: E402
from viewer.state import ViewerState  # noqa: E402

ORBIT_STEP = math.radians(0.2)


def bench_camera() -> Camera:
    return Camera(WIDTH, HEIGHT, 1200, 1200, WIDTH / 2, HEIGHT / 2, look_at([0, 0, -4], [0, 0, 0]))


def finish() -> None:
    GL.glFinish()
    torch.cuda.synchronize()


def loop_fps(app: ViewerApp, frames: int, moving: bool) -> float:
    """Frames per second of ``frames`` iterations of the viewer's draw + swap (median of 3)."""
    state, start_pose = app.state, app.state.world_to_camera.clone()
    target = torch.zeros(3, dtype=torch.float64)
    runs = []
    for _ in range(3):
        pose = start_pose
        for _ in range(10):   # warm-up
            app.draw()
            app.surface.swap()
        finish()
        begin = time.perf_counter()
        for _ in range(frames):
            if moving:
                pose = orbit(pose, target, yaw=ORBIT_STEP, pitch=0.0)
                state.set_pose(pose)
            app.draw()
            app.surface.swap()
        finish()
        runs.append(frames / (time.perf_counter() - begin))
        state.set_pose(start_pose)
    return statistics.median(runs)


def make_app(gaussians_cpu, backend: str, interop: bool = True, fast_culling: bool = True) -> ViewerApp:
    camera = bench_camera()
    state = ViewerState(WIDTH, HEIGHT, camera.fov_y, camera.world_to_camera.clone(), input_cameras=[camera],
                        backend=backend, available_backends=("cuda", "gl"), max_sh_degree=3, sh_degree=3,
                        fast_culling=fast_culling)
    viewer_input = ViewerInput(gaussians_cpu, [camera], (0.0, 0.0, 0.0), "bench")
    return ViewerApp(viewer_input, state, offscreen=True, device=torch.device("cuda", 0), interop=interop)


def fps_rows(n: int, frames: int, with_gsplat: bool, quad_frames: int) -> list[str]:
    gaussians = random_scene(n).to("cpu")
    label = f"{n / 1e6:g}M"
    rows = []
    cases = [("CUDA + interop", "cuda", True, True), ("CUDA, host copy (--no_interop)", "cuda", False, True),
             ("GL compute tiles (gl-compute)", "gl-compute", True, True),
             ("GL instanced quads (gl, fast culling)", "gl", True, True),
             ("GL instanced quads (gl, no fast culling)", "gl", True, False)]
    for name, backend, interop, fast in cases:
        app = make_app(gaussians, backend, interop, fast)
        try:
            for moving in (False, True):
                # Fragment-bound quads can be slow on data-centre GPUs: fewer frames for them.
                fps = loop_fps(app, quad_frames if backend == "gl" else frames, moving)
                rows.append(f"| {name} | {label} | {'orbit' if moving else 'static'} | {fps:.1f} | {1000 / fps:.2f} |")
                print(rows[-1], flush=True)
        finally:
            app.close()
        torch.cuda.empty_cache()
    if with_gsplat:
        device_scene = gaussians.to("cuda")
        step = gsplat_step(device_scene, bench_camera(), backward=False)
        if step is not None:
            ms = time_ms(step, 100)
            rows.append(f"| anchor: gsplat rasterization only (no display) | {label} | static | {1000 / ms:.1f} | {ms:.2f} |")
            print(rows[-1], flush=True)
        del device_scene
        torch.cuda.empty_cache()
    return rows


def launch_seconds(ply: Path, backend: str) -> list[float]:
    """Seconds from starting ``splat-view PLY --offscreen --frames 1`` (1080p) to its first frame
    drawn on the GPU (the viewer reports it, see ``viewer.app.LAUNCH_TIME_VARIABLE``); run twice."""
    times = []
    for _ in range(2):
        env = dict(os.environ, SPLATVIEW_LAUNCH_TIME=repr(time.time()))
        result = subprocess.run([sys.executable, "-m", "viewer.cli", str(ply), "--offscreen", "--frames", "1",
                                 "--rendering-size", str(WIDTH), str(HEIGHT), "--backend", backend],
                                capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parent.parent)
        reported = [line for line in result.stderr.splitlines() if "first frame drawn" in line]
        if result.returncode != 0 or not reported:
            raise RuntimeError(f"splat-view failed: {result.stderr.strip()[-500:]}")
        times.append(float(reported[-1].split("drawn ")[1].split(" s")[0]))
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[1_000_000, 3_000_000])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--quad-frames", type=int, default=20, help="frames per run for the gl (quads) backend")
    parser.add_argument("--no-gsplat", action="store_true", help="skip the gsplat anchor rows")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench/viewer.py needs a CUDA GPU", file=sys.stderr)
        return 2
    torch.cuda.set_device(0)
    print(f"$ python {' '.join(sys.argv)}")
    print(f"machine: {torch.cuda.get_device_name()} | torch {torch.__version__} | Python {platform.python_version()}")
    print("| path | Gaussians | camera | FPS | ms/frame |")
    print("| --- | --- | --- | --- | --- |")
    for n in args.counts:
        fps_rows(n, args.frames, not args.no_gsplat, args.quad_frames)
    with tempfile.TemporaryDirectory() as folder:
        ply = Path(folder) / "model_1M.ply"
        write_ply(ply, random_scene(1_000_000).to("cpu"))
        for backend in ("cuda", "gl-compute"):
            first, warm = launch_seconds(ply, backend)
            print(f"launch to first frame, 1M Gaussians, --backend {backend}: {warm:.2f} s with warm caches "
                  f"(first run {first:.2f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
