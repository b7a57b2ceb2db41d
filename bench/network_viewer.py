"""What watching training costs: training speed with the network viewer port idle, with
splatview's viewer rendering locally from snapshots (the extension), and with a reference-style
viewer asking for an 800x800 image every iteration (what SIBR's remote viewer does).

    python bench/network_viewer.py --source path/to/scene [--iterations 2000] [--repeats 2] [--train-flags "..."]

The trainer runs in this process (``trainer.train.train`` with the same hooks as
``splat-train``); the viewer is ``viewer.network.client.RemoteClient`` in a child process, as a
separate viewer program would be. Steps/s come from the training loop itself (set-up and
evaluation excluded); the median over repeats, modes interleaved. The anchor is training with
``--disable_viewer``. Goal: the snapshot extension costs at most 5 %.
"""

from __future__ import annotations

import argparse
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from trainer.cli.train import viewer_hooks  # noqa: E402
from trainer.config import parse_args  # noqa: E402
from trainer.train import train  # noqa: E402

CLIENT = """
import sys, time
sys.path.insert(0, {root!r})
from rasterizer import Camera, look_at
from viewer.network.client import RemoteClient
extension = {extension}
client = RemoteClient("127.0.0.1", {port}, use_extension=extension, load_cameras=False).start()
client.set_controls(train=True, keep_alive=False, local_rendering=extension)
if not extension:   # a reference viewer: one 800x800 image per iteration
    client.set_view(Camera(800, 800, 900.0, 900.0, 400.0, 400.0, look_at([0.0, 0.0, -4.0], [0.0, 0.0, 0.0])))
while True:
    time.sleep(0.2)
    state = client.latest()
    if state.snapshot_sequence or state.frame is not None:
        frames = 0 if state.frame is None else state.frame.sequence
        print(f"RECEIVING {state.snapshot_sequence} snapshots, {frames} images", flush=True)
"""

MODES = ("no viewer (--disable_viewer)", "port open, no viewer", "splatview viewer (snapshots)",
         "reference-style viewer (800x800 images)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(mode: str, source: str, iterations: int, folder: Path, extra: list[str]) -> tuple[float, str]:
    """Steps/s of one training run in ``mode`` and what the viewer saw."""
    port = free_port()
    flags = ["-s", source, "-m", str(folder / f"run{time.monotonic_ns()}"), "--iterations", str(iterations),
             "--eval", "-w", "--quiet", "--test_iterations", "-1", "--save_iterations", str(iterations),
             "--port", str(port), *extra]
    if mode == MODES[0]:
        flags.append("--disable_viewer")
    config = parse_args(flags)
    hooks = viewer_hooks(config)
    client = None
    if mode in MODES[2:]:
        script = CLIENT.format(root=str(ROOT), port=port, extension=mode == MODES[2])
        client = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        time.sleep(1.0)   # let it connect before iteration 1 (accept is polled every iteration)
    try:
        result = train(config, hooks=hooks, log=lambda *_: None)
    finally:
        seen = ""
        if client is not None:
            client.terminate()
            out, _ = client.communicate(timeout=10)
            lines = [line for line in out.splitlines() if line.startswith("RECEIVING")]
            seen = lines[-1][len("RECEIVING "):] if lines else "nothing"
    return result.steps_per_second, seen


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", required=True)
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--train-flags", default="", help="more splat-train flags, e.g. '-r 4 --random_init_points 3000'")
    args = parser.parse_args(argv)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "CPU"
    print(f"$ python {' '.join(sys.argv)}")
    print(f"machine: {device} | torch {torch.__version__} | Python {platform.python_version()}")
    speeds: dict[str, list[float]] = {mode: [] for mode in MODES}
    seen: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.repeats):
            for mode in MODES:
                steps, seen[mode] = run(mode, args.source, args.iterations, Path(folder), args.train_flags.split())
                speeds[mode].append(steps)
    anchor = statistics.median(speeds[MODES[0]])
    print("| mode | steps/s (median) | runs | vs no viewer | viewer received |")
    print("| --- | --- | --- | --- | --- |")
    for mode in MODES:
        median = statistics.median(speeds[mode])
        runs = ", ".join(f"{s:.1f}" for s in speeds[mode])
        print(f"| {mode} | {median:.1f} | {runs} | {100 * (median / anchor - 1):+.1f}% | {seen.get(mode, '')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
