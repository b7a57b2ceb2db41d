"""Per-kernel CUDA time of one forward+backward (development aid): python bench/profile_cuda.py [N]."""
import sys

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, __file__.rsplit("/", 2)[0])
from bench.rasterizer import scene_and_camera  # noqa: E402
from rasterizer import render  # noqa: E402

n = int(sys.argv[1]) if len(sys.argv) > 1 else 3_000_000
gaussians, camera = scene_and_camera(n)
for _ in range(3):
    render(gaussians, camera, backend="cuda").image.sum().backward()
torch.cuda.synchronize()
with profile(activities=[ProfilerActivity.CUDA]) as prof:
    render(gaussians, camera, backend="cuda").image.sum().backward()
    torch.cuda.synchronize()
print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=15))
