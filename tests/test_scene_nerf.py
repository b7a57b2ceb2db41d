"""transforms*.json scenes: NeRF-synthetic and the instant-ngp/nerfstudio flavour (with lens
distortion removed on load, checked against the analytic model)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rasterizer.files import FileFormatError
from rasterizer.ply import PointCloud, write_point_cloud
from trainer.scene import Distortion, load_scene, random_point_cloud, undistort_image
from trainer.scene.undistort import distort_normalized, undistortion_grid

OPENGL_IDENTITY = np.eye(4).tolist()


def translated(x: float, y: float = 0.0, z: float = 0.0) -> list:
    matrix = np.eye(4)
    matrix[:3, 3] = (x, y, z)
    return matrix.tolist()


def write_synthetic(source: Path, train: int = 3, test: int = 2, size=(12, 10)) -> None:
    """RGBA frames: left half opaque colour (10*i, 20, 30), right half fully transparent."""
    for split, count in (("train", train), ("test", test)):
        frames = []
        (source / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            rgba = np.zeros((size[1], size[0], 4), dtype=np.uint8)
            rgba[:, : size[0] // 2] = (10 * i + (split == "test"), 20, 30, 255)
            rgba[:, size[0] // 2:, :3] = 77  # colour under zero alpha must not show
            Image.fromarray(rgba, "RGBA").save(source / split / f"r_{i}.png")
            frames.append({"file_path": f"./{split}/r_{i}", "transform_matrix": translated(i, 0, 4)})
        (source / f"transforms_{split}.json").write_text(json.dumps(
            {"camera_angle_x": 0.9, "fl_x": 999.0, "cx": 1.0, "frames": frames}))


# ----- NeRF-synthetic --------------------------------------------------------------------------
def test_synthetic_cameras_split_and_compositing(tmp_path):
    source = tmp_path / "syn"
    write_synthetic(source)
    scene = load_scene(source, eval=True, white_background=True, quiet=True)
    assert scene.kind == "nerf_synthetic" and scene.background == (1.0, 1.0, 1.0)
    assert [v.image_name for v in scene.train_views] == ["r_0", "r_1", "r_2"]
    assert [v.image_name for v in scene.test_views] == ["r_0", "r_1"]
    camera = scene.train_views[1].camera
    focal = 12 / (2 * math.tan(0.45))  # camera_angle_x wins over fl_x/cx, as the reference
    assert (camera.fx, camera.fy, camera.cx, camera.cy) == pytest.approx((focal, focal, 6.0, 5.0))
    expected = np.diag([1.0, -1.0, -1.0, 1.0])  # OpenGL c2w (x right, y up, z back) -> OpenCV w2c
    expected[:3, 3] = -expected[:3, :3] @ np.array([1.0, 0.0, 4.0])
    np.testing.assert_allclose(camera.world_to_camera.numpy(), expected, atol=1e-12)
    assert scene.extent == pytest.approx(1.1 * 1.0)  # train centres x = 0, 1, 2

    image = scene.images.get(scene.train_views[1].index).numpy()
    assert (image[:, :6] == (10, 20, 30)).all() and (image[:, 6:] == 255).all()
    black = load_scene(source, eval=True, quiet=True)
    assert (black.images.get(black.test_views[1].index).numpy()[:, 6:] == 0).all()


def test_synthetic_without_eval_appends_test_frames(tmp_path):
    source = tmp_path / "syn"
    write_synthetic(source)
    scene = load_scene(source, quiet=True)
    assert scene.test_views == []
    # The reference's order: train frames in file order, then test frames in file order.
    assert [v.image_name for v in scene.train_views] == ["r_0", "r_1", "r_2", "r_0", "r_1"]
    assert [v.image_path.parent.name for v in scene.train_views] == ["train"] * 3 + ["test"] * 2


def test_synthetic_random_points_are_the_reference_ones(tmp_path):
    source = tmp_path / "syn"
    write_synthetic(source, train=1, test=0)
    before = sorted(p.name for p in source.iterdir())
    cloud = load_scene(source, quiet=True).point_cloud
    assert sorted(p.name for p in source.iterdir()) == before  # points3d.ply not written
    assert len(cloud) == 100_000
    assert cloud.xyz.min() >= -1.3 and cloud.xyz.max() <= 1.3
    assert np.all(cloud.rgb == np.float32(127 / 255))
    rng = np.random.RandomState(0)  # the reference: np.random seeded 0 by safe_state
    np.testing.assert_allclose(cloud.xyz[:5], (rng.random_sample((100_000, 3)) * 2.6 - 1.3)[:5].astype(np.float32))
    np.testing.assert_array_equal(random_point_cloud().xyz, cloud.xyz)


def test_synthetic_points3d_ply_is_used(tmp_path):
    source = tmp_path / "syn"
    write_synthetic(source, train=1, test=0)
    cloud = PointCloud(np.ones((3, 3)), np.zeros((3, 3)))
    write_point_cloud(source / "points3d.ply", cloud)
    scene = load_scene(source, quiet=True)
    np.testing.assert_array_equal(scene.point_cloud.xyz, cloud.xyz)
    assert scene.point_cloud_path == (source / "points3d.ply").resolve()


def test_synthetic_missing_image_and_bad_json(tmp_path):
    source = tmp_path / "syn"
    write_synthetic(source)
    (source / "train" / "r_1.png").unlink()
    with pytest.raises(FileNotFoundError) as info:
        load_scene(source, quiet=True)
    assert str(source / "train" / "r_1.png") in str(info.value)
    (source / "transforms_train.json").write_text("{not json")
    with pytest.raises(FileFormatError) as info:
        load_scene(source, quiet=True)
    assert "transforms_train.json" in str(info.value)


def test_shapes_scene(shared_data):
    source = shared_data("shapes")
    scene = load_scene(source, eval=True, white_background=True, quiet=True)
    assert (len(scene.train_views), len(scene.test_views)) == (50, 10)
    view = scene.test_views[0]
    assert (view.camera.width, view.camera.height) == (400, 400)
    assert view.camera.fx == pytest.approx(555.5555, abs=1e-3)
    rgba = np.asarray(Image.open(view.image_path).convert("RGBA")).astype(np.float64)
    alpha = rgba[..., 3:] / 255.0
    expected = rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)
    image = scene.images.get(view.index).numpy()
    assert np.abs(image - expected).max() <= 0.5 + 1e-6
    assert (image[rgba[..., 3] == 0] == 255).all()


# ----- undistortion -----------------------------------------------------------------------------
K = dict(fx=90.0, fy=95.0, cx=83.3, cy=57.1)
DIST = Distortion(k1=-0.18, k2=0.04, p1=0.004, p2=-0.003)
SIZE = (160, 120)


def field(x, y):
    """A smooth function of normalised pinhole coordinates, values in [0.1, 0.9]."""
    return np.stack([0.5 + 0.4 * np.sin(3 * x + 1) * np.cos(2 * y),
                     0.5 + 0.4 * np.cos(2.5 * x - y),
                     0.5 + 0.3 * x * y], axis=-1)


def pixel_centres(width, height, fx, fy, cx, cy):
    u, v = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    return (u - cx) / fx, (v - cy) / fy


def undistort_points(xd, yd, d: Distortion, iterations: int = 30):
    """Invert the distortion by fixed-point iteration (test-side, independent of the loader)."""
    x, y = xd.copy(), yd.copy()
    for _ in range(iterations):
        r2 = x * x + y * y
        radial = 1 + d.k1 * r2 + d.k2 * r2 * r2 + d.k3 * r2 ** 3
        dx = 2 * d.p1 * x * y + d.p2 * (r2 + 2 * x * x)
        dy = d.p1 * (r2 + 2 * y * y) + 2 * d.p2 * x * y
        x, y = (xd - dx) / radial, (yd - dy) / radial
    return x, y


def distorted_and_expected():
    """(image a distorting lens would take of ``field``, the ideal pinhole image, interior mask)."""
    xd, yd = pixel_centres(*SIZE, **K)
    distorted = field(*undistort_points(xd, yd, DIST))
    x, y = pixel_centres(*SIZE, **K)
    expected = field(x, y)
    # Interior: output pixels whose source position lies at least 2 px inside the image.
    sx, sy = distort_normalized(x, y, DIST)
    u, v = K["fx"] * sx + K["cx"], K["fy"] * sy + K["cy"]
    inside = (u > 2) & (u < SIZE[0] - 2) & (v > 2) & (v < SIZE[1] - 2)
    return distorted.astype(np.float32), expected, inside


def test_undistort_matches_the_analytic_model():
    distorted, expected, inside = distorted_and_expected()
    assert inside.mean() > 0.8
    result = undistort_image(distorted, K["fx"], K["fy"], K["cx"], K["cy"], DIST)
    assert result.shape == distorted.shape and result.dtype == np.float32
    error = np.abs(result - expected)[inside]
    assert error.max() < 5e-4  # a half-pixel convention error gives ~2.6e-3
    assert np.abs(distorted - expected)[inside].max() > 0.05  # the distortion is not negligible


def test_identity_grid_samples_pixel_centres_exactly():
    image = np.random.default_rng(1).random((7, 9, 3)).astype(np.float32)
    grid = undistortion_grid(9, 7, 5.0, 6.0, 4.1, 3.3, Distortion())
    sampled = torch.nn.functional.grid_sample(torch.from_numpy(image).permute(2, 0, 1)[None], grid,
                                              align_corners=False)[0].permute(1, 2, 0)
    np.testing.assert_allclose(sampled.numpy(), image, atol=1e-5)


def write_transforms(source: Path, count: int, distortion: Distortion | None, image=None,
                     stored_size=None, extra=None) -> None:
    (source / "images").mkdir(parents=True, exist_ok=True)
    frames = []
    for i in range(count):
        name = f"images/f_{count - 1 - i:02d}.png"  # file order reversed vs. name order
        pixels = image if image is not None else np.full((SIZE[1], SIZE[0], 3), i, np.uint8)
        picture = Image.fromarray(pixels)
        if stored_size is not None:
            picture = picture.resize(stored_size)
        picture.save(source / name)
        frames.append({"file_path": name, "transform_matrix": translated(count - 1 - i)})
    content = {"fl_x": K["fx"], "fl_y": K["fy"], "cx": K["cx"], "cy": K["cy"],
               "w": SIZE[0], "h": SIZE[1], "frames": frames, **(extra or {})}
    if distortion is not None:
        content.update(k1=distortion.k1, k2=distortion.k2, p1=distortion.p1, p2=distortion.p2)
    (source / "transforms.json").write_text(json.dumps(content))


def test_transforms_loader_undistorts_on_load(tmp_path):
    distorted, expected, inside = distorted_and_expected()
    source = tmp_path / "ngp"
    write_transforms(source, 1, DIST, image=(distorted * 255).round().astype(np.uint8))
    scene = load_scene(source, quiet=True)
    assert scene.kind == "transforms"
    view = scene.train_views[0]
    assert view.image_name == "images/f_00.png"
    camera = view.camera
    assert (camera.fx, camera.fy, camera.cx, camera.cy) == (K["fx"], K["fy"], K["cx"], K["cy"])
    image = scene.images.get(view.index).numpy().astype(np.float64)
    error = np.abs(image - expected * 255)[inside]
    assert error.max() <= 2.0 and error.mean() < 0.6


def test_transforms_split_points_and_scaled_intrinsics(tmp_path):
    source = tmp_path / "ngp"
    write_transforms(source, 9, None, stored_size=(80, 60))  # images stored at half of w x h
    scene = load_scene(source, eval=True, quiet=True)
    assert [v.image_name for v in scene.test_views] == ["images/f_00.png", "images/f_08.png"]
    assert len(scene.train_views) == 7
    camera = scene.train_views[0].camera
    assert (camera.width, camera.height) == (80, 60)
    assert (camera.fx, camera.fy, camera.cx, camera.cy) == pytest.approx(
        (K["fx"] / 2, K["fy"] / 2, K["cx"] / 2, K["cy"] / 2))
    assert scene.extent == pytest.approx(1.1 * 3.0)  # train centres x = 1..7, mean 4
    assert len(scene.point_cloud) == 100_000
    assert len(load_scene(source, quiet=True).train_views) == 9


def test_transforms_rejects_fisheye(tmp_path):
    source = tmp_path / "ngp"
    write_transforms(source, 1, None, extra={"camera_model": "OPENCV_FISHEYE"})
    with pytest.raises(FileFormatError, match="OPENCV_FISHEYE") as info:
        load_scene(source, quiet=True)
    assert "transforms.json" in str(info.value)
