"""Rough timing of the CUDA backend on random Gaussians at 1080p (development aid)."""
import math
import sys

import torch

from rasterizer import Camera, Gaussians, look_at, render


def scene_and_camera(n: int):
    """n random Gaussians (SH degree 3, leaves requiring grad) and a 1080p camera."""
    torch.manual_seed(0)
    scale = math.log(0.02 * (1e6 / n) ** (1 / 3))
    g = Gaussians(means=torch.randn(n, 3), sh_dc=torch.randn(n, 1, 3) * 0.5, sh_rest=torch.randn(n, 15, 3) * 0.1,
                  opacity_logits=torch.randn(n), log_scales=torch.randn(n, 3) * 0.3 + scale,
                  quaternions=torch.randn(n, 4)).to("cuda")
    for tensor in g.tensors().values():
        tensor.requires_grad_(True)
    return g, Camera(1920, 1080, 1200, 1200, 960, 540, look_at([0, 0, -4], [0, 0, 0]))


def main(n: int) -> None:
    g, cam = scene_and_camera(n)
    for label, grad in (("forward", False), ("forward+backward", True)):
        times = []
        for i in range(30):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            with torch.set_grad_enabled(grad):
                out = render(g, cam, backend="cuda")
                if grad:
                    out.image.sum().backward()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        times.sort()
        print(f"{n} Gaussians 1920x1080 {label}: median {times[len(times) // 2]:.2f} ms")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3_000_000)
