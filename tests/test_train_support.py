"""Helpers for the trainer tests: a tiny NeRF-synthetic scene rendered from known Gaussians.

(No tests here; the trainer test modules import these helpers.)
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from rasterizer import Camera, Gaussians, look_at, render
from rasterizer.ply import PointCloud, write_point_cloud
from trainer.config import parse_args

SIZE = 32
FOV = 0.8


def known_gaussians(count: int = 160, seed: int = 1) -> Gaussians:
    """A colourful blob of opaque Gaussians around the origin (SH degree 0)."""
    gen = torch.Generator().manual_seed(seed)
    means = (torch.rand(count, 3, generator=gen) - 0.5) * 1.2
    colours = torch.rand(count, 3, generator=gen)
    sh_dc = ((colours - 0.5) / 0.28209479177387814).reshape(count, 1, 3)
    return Gaussians(means, sh_dc, torch.zeros(count, 0, 3), torch.full((count,), 2.0),
                     torch.full((count, 3), math.log(0.09)), torch.tensor([[1.0, 0, 0, 0]]).repeat(count, 1))


def orbit_camera(angle: float, height: float = 1.2, radius: float = 3.2) -> Camera:
    eye = (radius * math.cos(angle), height, radius * math.sin(angle))
    return Camera.from_fov(SIZE, SIZE, FOV, FOV, look_at(eye, (0.0, 0.0, 0.0)))


def _opengl_c2w(camera: Camera) -> list:
    c2w = camera.camera_to_world.numpy().copy()
    c2w[:3, 1:3] *= -1.0  # OpenCV (y down, z forward) -> Blender/OpenGL (y up, z back)
    return c2w.tolist()


def write_tiny_scene(root: Path, train: int = 10, test: int = 3, white: bool = False,
                     points: int = 200, seed: int = 1) -> Path:
    """A NeRF-synthetic folder (transforms_train/test.json, PNGs, points3d.ply) of the known
    Gaussians seen from cameras on an orbit; returns the folder."""
    gaussians = known_gaussians(seed=seed)
    background = (1.0, 1.0, 1.0) if white else (0.0, 0.0, 0.0)
    for split, count, offset in (("train", train, 0.0), ("test", test, 0.37)):
        (root / split).mkdir(parents=True, exist_ok=True)
        frames = []
        for i in range(count):
            camera = orbit_camera(2 * math.pi * (i + offset) / count, height=1.2 if i % 2 else -0.8)
            with torch.no_grad():
                image = render(gaussians, camera, background, backend="reference").image.clamp(0, 1)
            pixels = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            Image.fromarray(pixels, "RGB").save(root / split / f"r_{i}.png")
            frames.append({"file_path": f"./{split}/r_{i}", "transform_matrix": _opengl_c2w(camera)})
        (root / f"transforms_{split}.json").write_text(json.dumps({"camera_angle_x": FOV, "frames": frames}))
    rng = np.random.default_rng(seed)
    xyz = rng.uniform(-0.7, 0.7, size=(points, 3))
    write_point_cloud(root / "points3d.ply", PointCloud(xyz, np.full((points, 3), 0.5)))
    return root


def tiny_config(source: Path, model: Path, *extra: str):
    """A TrainConfig for the tiny scene: quick schedule, quiet, CPU-friendly."""
    return parse_args(["-s", str(source), "-m", str(model), "--quiet", "--data_device", "cpu",
                       "--backend", "reference", *extra])
