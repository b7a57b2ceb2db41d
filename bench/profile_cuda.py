"""Per-kernel CUDA time of one forward+backward (development aid).

    python bench/profile_cuda.py [N]            # N random Gaussians at 1080p
    python bench/profile_cuda.py --ply MODEL    # a trained model, framed as in bench/rasterizer.py
"""
import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.rasterizer import HEIGHT, TRAINED_MODEL_FOV, WIDTH, scene_and_camera  # noqa: E402
from rasterizer import read_ply, render  # noqa: E402
from viewer.scene_source import framing_camera  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("count", type=int, nargs="?", default=3_000_000)
parser.add_argument("--ply")
args = parser.parse_args()
if args.ply:
    gaussians = read_ply(args.ply).to("cuda")
    for tensor in gaussians.tensors().values():
        tensor.requires_grad_(True)
    camera = framing_camera(gaussians, WIDTH, HEIGHT, TRAINED_MODEL_FOV)
else:
    gaussians, camera = scene_and_camera(args.count)
for _ in range(3):
    render(gaussians, camera, backend="cuda").image.sum().backward()
torch.cuda.synchronize()
with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
    render(gaussians, camera, backend="cuda").image.sum().backward()
    torch.cuda.synchronize()
print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=18))
print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=12))
