"""COLMAP loading: text and binary models, pinhole intrinsics with their principal point, poses,
split, extent, points, shared scenes and malformed inputs."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rasterizer.files import FileFormatError
from rasterizer.ply import PointCloud, write_point_cloud
from trainer.scene import UnsupportedCameraModelError, load_scene
from trainer.scene import colmap

MODEL_IDS = {name: model_id for model_id, (name, _) in colmap.CAMERA_MODELS.items()}

# Two cameras with off-centre principal points; images with known poses.
CAMERAS = [
    (1, "SIMPLE_PINHOLE", 40, 30, (50.0, 17.25, 12.5)),
    (2, "PINHOLE", 36, 24, (60.0, 55.0, 20.0, 9.5)),
]
S2 = math.sqrt(0.5)
# (image id, qvec, tvec, camera id, name): names deliberately not in id order.
IMAGES = [
    (1, (1.0, 0.0, 0.0, 0.0), (1.0, 0.0, 0.0), 1, "c.png"),
    (2, (S2, 0.0, 0.0, S2), (0.0, -3.0, 0.0), 2, "a.png"),      # 90 degrees about z
    (3, (1.0, 0.0, 0.0, 0.0), (0.0, 3.0, 0.0), 1, "b.png"),
    (4, (1.0, 0.0, 0.0, 0.0), (-1.0, 0.0, 0.0), 2, "sub/d.png"),
]
POINTS = [
    (7, (0.1, 0.2, 0.3), (255, 0, 128), 0.5, [(1, 0), (2, 3)]),
    (9, (-1.0, 2.0, 5.0), (1, 2, 3), 0.25, []),
    (11, (4.0, -4.0, 0.0), (10, 20, 30), 1.5, [(3, 1)]),
]


# ----- test-side writers ------------------------------------------------------------------------
def write_text_model(folder: Path, cameras=CAMERAS, images=IMAGES, points=POINTS) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["# Camera list with one line of data per camera:"]
    lines += [f"{cid} {model} {w} {h} " + " ".join(repr(p) for p in params)
              for cid, model, w, h, params in cameras]
    (folder / "cameras.txt").write_text("\n".join(lines) + "\n")
    lines = ["# Image list with two lines of data per image:"]
    for iid, q, t, cid, name in images:
        lines.append(f"{iid} {' '.join(map(repr, q))} {' '.join(map(repr, t))} {cid} {name}")
        lines.append("" if iid % 2 else "1.5 2.5 -1 3.5 4.5 7")  # empty 2D point lines too
    (folder / "images.txt").write_text("\n".join(lines) + "\n")
    lines = ["# 3D point list"]
    for pid, xyz, rgb, err, track in points:
        lines.append(f"{pid} {' '.join(map(repr, xyz))} {' '.join(map(str, rgb))} {err} "
                     + " ".join(f"{i} {j}" for i, j in track))
    (folder / "points3D.txt").write_text("\n".join(lines) + "\n")


def write_binary_model(folder: Path, cameras=CAMERAS, images=IMAGES, points=POINTS) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    data = struct.pack("<Q", len(cameras))
    for cid, model, w, h, params in cameras:
        model_id = MODEL_IDS.get(model, model) if isinstance(model, str) else model
        data += struct.pack("<iiQQ", cid, model_id, w, h) + struct.pack(f"<{len(params)}d", *params)
    (folder / "cameras.bin").write_bytes(data)
    data = struct.pack("<Q", len(images))
    for iid, q, t, cid, name in images:
        data += struct.pack("<i7di", iid, *q, *t, cid) + name.encode() + b"\0"
        points2d = [(1.5 + k, 2.5, k if k % 2 else -1) for k in range(iid)]  # skipped on read
        data += struct.pack("<Q", len(points2d))
        data += b"".join(struct.pack("<ddq", *p) for p in points2d)
    (folder / "images.bin").write_bytes(data)
    data = struct.pack("<Q", len(points))
    for pid, xyz, rgb, err, track in points:
        data += struct.pack("<Q3d3BdQ", pid, *xyz, *rgb, err, len(track))
        data += b"".join(struct.pack("<ii", *pair) for pair in track)
    (folder / "points3D.bin").write_bytes(data)


def pattern(width: int, height: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def write_images(source: Path, cameras=CAMERAS, images=IMAGES) -> dict[str, np.ndarray]:
    sizes = {cid: (w, h) for cid, _, w, h, _ in cameras}
    written = {}
    for iid, _, _, cid, name in images:
        path = source / "images" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        written[name] = pattern(*sizes[cid], seed=iid)
        Image.fromarray(written[name]).save(path)
    return written


@pytest.fixture(params=["text", "binary"])
def colmap_scene(request, tmp_path) -> tuple[Path, dict[str, np.ndarray]]:
    source = tmp_path / "scene"
    writer = write_text_model if request.param == "text" else write_binary_model
    writer(source / "sparse" / "0")
    return source, write_images(source)


def files_under(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


# ----- models --------------------------------------------------------------------------------------
def test_loads_model_with_principal_points_and_poses(colmap_scene):
    source, written = colmap_scene
    before = files_under(source)
    scene = load_scene(source, quiet=True)
    assert scene.kind == "colmap" and scene.source_path == source.resolve()
    assert [v.image_name for v in scene.train_views] == ["a.png", "b.png", "c.png", "sub/d.png"]
    assert scene.test_views == []
    by_name = {v.image_name: v for v in scene.train_views}

    a = by_name["a.png"].camera  # PINHOLE, camera 2
    assert (a.width, a.height, a.fx, a.fy, a.cx, a.cy) == (36, 24, 60.0, 55.0, 20.0, 9.5)
    c = by_name["c.png"].camera  # SIMPLE_PINHOLE, camera 1
    assert (c.width, c.height, c.fx, c.fy, c.cx, c.cy) == (40, 30, 50.0, 50.0, 17.25, 12.5)
    assert c.image_name == "c.png"
    assert by_name["c.png"].original_camera == c  # no resizing at this size

    expected = torch.eye(4, dtype=torch.float64)
    expected[:3, :3] = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    expected[:3, 3] = torch.tensor([0.0, -3.0, 0.0])
    torch.testing.assert_close(a.world_to_camera, expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(a.center, torch.tensor([3.0, 0.0, 0.0], dtype=torch.float64))

    # Centres (-R^T t): a (3,0,0), b (0,-3,0), c (-1,0,0), d (1,0,0): mean (0.75,-0.75,0).
    distance = max(math.hypot(x - 0.75, y + 0.75) for x, y in [(3, 0), (0, -3), (-1, 0), (1, 0)])
    assert scene.extent == pytest.approx(1.1 * distance)

    for view in scene.train_views:
        image = scene.images.get(view.index)
        assert image.dtype == torch.uint8 and image.shape == (view.camera.height, view.camera.width, 3)
        np.testing.assert_array_equal(image.numpy(), written[view.image_name])

    np.testing.assert_allclose(scene.point_cloud.xyz, [p[1] for p in POINTS], rtol=1e-6)
    np.testing.assert_allclose(scene.point_cloud.rgb, np.array([p[2] for p in POINTS]) / 255.0, rtol=1e-6)
    assert scene.point_cloud_path is None
    assert files_under(source) == before  # nothing written into the source folder


def test_binary_and_text_readers_agree(tmp_path):
    write_text_model(tmp_path / "t")
    write_binary_model(tmp_path / "b")
    assert colmap.read_cameras_text(tmp_path / "t/cameras.txt") == colmap.read_cameras_binary(tmp_path / "b/cameras.bin")
    assert colmap.read_images_text(tmp_path / "t/images.txt") == colmap.read_images_binary(tmp_path / "b/images.bin")
    text = colmap.read_points3d_text(tmp_path / "t/points3D.txt")
    binary = colmap.read_points3d_binary(tmp_path / "b/points3D.bin")
    np.testing.assert_array_equal(text.xyz, binary.xyz)
    np.testing.assert_array_equal(text.rgb, binary.rgb)


def test_points3d_ply_takes_precedence(tmp_path):
    source = tmp_path / "scene"
    write_binary_model(source / "sparse" / "0")
    write_images(source)
    cloud = PointCloud(np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]), np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    write_point_cloud(source / "sparse" / "0" / "points3D.ply", cloud)
    scene = load_scene(source, quiet=True)
    np.testing.assert_array_equal(scene.point_cloud.xyz, cloud.xyz)
    assert scene.point_cloud_path == (source / "sparse" / "0" / "points3D.ply").resolve()


def test_model_directly_in_sparse_and_custom_image_folder(tmp_path):
    source = tmp_path / "scene"
    write_binary_model(source / "sparse")
    write_images(source)
    (source / "images").rename(source / "photos")
    scene = load_scene(source, images="photos", quiet=True)
    assert len(scene.train_views) == 4


def test_images_smaller_than_intrinsics_scale_the_camera(tmp_path):
    """``-i images_2`` with full-size intrinsics: loading size from the file, K scaled to it,
    original_camera at the intrinsics size (cameras.json)."""
    source = tmp_path / "scene"
    cameras = [(1, "PINHOLE", 80, 60, (100.0, 90.0, 41.0, 29.0))]
    images = [(1, (1.0, 0.0, 0.0, 0.0), (0.0, 0.0, 0.0), 1, "x.png")]
    write_binary_model(source / "sparse" / "0", cameras, images, [])
    write_images(source, [(1, "PINHOLE", 40, 30, ())], images)
    view = load_scene(source, quiet=True).train_views[0]
    assert (view.original_camera.width, view.original_camera.fx) == (80, 100.0)
    assert (view.camera.width, view.camera.height) == (40, 30)
    assert (view.camera.fx, view.camera.fy, view.camera.cx, view.camera.cy) == (50.0, 45.0, 20.5, 14.5)


def test_llff_split_and_extent(tmp_path):
    source = tmp_path / "scene"
    cameras = [(1, "PINHOLE", 8, 6, (10.0, 10.0, 4.0, 3.0))]
    # 17 images named img_16 ... img_00 (reverse id order), camera centres on the x axis at x=i.
    images = [(17 - i, (1.0, 0.0, 0.0, 0.0), (-float(i), 0.0, 0.0), 1, f"img_{i:02d}.png")
              for i in range(17)]
    write_binary_model(source / "sparse" / "0", cameras, images, POINTS)
    write_images(source, cameras, images)
    scene = load_scene(source, eval=True, quiet=True)
    assert [v.image_name for v in scene.test_views] == ["img_00.png", "img_08.png", "img_16.png"]
    assert [v.image_name for v in scene.train_views] == [f"img_{i:02d}.png" for i in range(17) if i % 8]
    # Training centres x in {1..7, 9..15}: mean 8, farthest 7 away.
    assert scene.extent == pytest.approx(1.1 * 7.0)
    assert sorted(v.index for v in scene.views) == list(range(17))
    no_eval = load_scene(source, quiet=True)
    assert len(no_eval.train_views) == 17 and no_eval.test_views == []
    assert no_eval.extent == pytest.approx(1.1 * 8.0)


def test_single_camera_extent_falls_back_to_one(tmp_path):
    source = tmp_path / "scene"
    write_binary_model(source / "sparse" / "0", CAMERAS, IMAGES[:1], POINTS)
    write_images(source, CAMERAS, IMAGES[:1])
    assert load_scene(source, quiet=True).extent == 1.0


# ----- shared scenes --------------------------------------------------------------------------------
def test_statuette_per_image_intrinsics(shared_data):
    source = shared_data("statuette")
    scene = load_scene(source, eval=True, quiet=True)
    names = sorted(p.name for p in (source / "images").iterdir())
    assert [v.image_name for v in scene.test_views] == names[::8]
    assert len(scene.train_views) + len(scene.test_views) == len(names) == 23
    cameras = colmap.read_cameras_binary(source / "sparse/0/cameras.bin")
    assert len({(c.width, c.height) for c in cameras.values()}) > 1  # sizes differ per image
    for view in scene.views[::5]:
        with Image.open(view.image_path) as image:
            assert (view.camera.width, view.camera.height) == image.size
        assert scene.images.get(view.index).shape == (view.camera.height, view.camera.width, 3)
    assert len({v.camera.fx for v in scene.views}) == 23
    assert len(scene.point_cloud) == 1443 and scene.extent > 0


def test_beer_rejects_simple_radial(shared_data):
    source = shared_data("beer")
    with pytest.raises(UnsupportedCameraModelError) as info:
        load_scene(source, quiet=True)
    message = str(info.value)
    assert "SIMPLE_RADIAL" in message and "splat-convert" in message and "cameras.bin" in message


# ----- bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["cameras.bin", "images.bin", "points3D.bin"])
def test_truncated_binary_file(tmp_path, name):
    source = tmp_path / "scene"
    write_binary_model(source / "sparse" / "0")
    write_images(source)
    path = source / "sparse" / "0" / name
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(FileFormatError, match="truncated") as info:
        load_scene(source, quiet=True)
    assert str(path) in str(info.value)


def test_unknown_camera_model_id(tmp_path):
    source = tmp_path / "scene"
    write_binary_model(source / "sparse" / "0", [(1, 99, 40, 30, (50.0, 20.0, 15.0))], IMAGES[:1])
    write_images(source, CAMERAS, IMAGES[:1])
    with pytest.raises(FileFormatError, match="unknown camera model id 99") as info:
        load_scene(source, quiet=True)
    assert "cameras.bin" in str(info.value)


def test_unknown_camera_model_name_in_text(tmp_path):
    source = tmp_path / "scene"
    write_text_model(source / "sparse" / "0", [(1, "WEIRD", 40, 30, (50.0,))], IMAGES[:1])
    with pytest.raises(FileFormatError, match="WEIRD") as info:
        load_scene(source, quiet=True)
    assert "cameras.txt" in str(info.value)


@pytest.mark.parametrize("model, params", [("OPENCV", (50, 50, 20, 15, 0.1, 0.0, 0.0, 0.0)),
                                           ("RADIAL", (50, 20, 15, 0.1, 0.01))])
def test_distorted_models_are_rejected(tmp_path, model, params):
    source = tmp_path / "scene"
    write_text_model(source / "sparse" / "0", [(1, model, 40, 30, params)], IMAGES[:1])
    write_images(source, CAMERAS, IMAGES[:1])
    with pytest.raises(UnsupportedCameraModelError, match=model) as info:
        load_scene(source, quiet=True)
    assert "splat-convert" in str(info.value) and "cameras.txt" in str(info.value)


def test_missing_image_names_the_file(tmp_path):
    source = tmp_path / "scene"
    write_binary_model(source / "sparse" / "0")
    write_images(source)
    (source / "images" / "b.png").unlink()
    with pytest.raises(FileNotFoundError) as info:
        load_scene(source, quiet=True)
    assert str(source / "images" / "b.png") in str(info.value)


def test_missing_image_folder(tmp_path):
    source = tmp_path / "scene"
    write_binary_model(source / "sparse" / "0")
    with pytest.raises(FileNotFoundError, match="image folder"):
        load_scene(source, quiet=True)


def test_image_with_unknown_camera(tmp_path):
    source = tmp_path / "scene"
    write_binary_model(source / "sparse" / "0", CAMERAS,
                       [(1, (1.0, 0.0, 0.0, 0.0), (0.0, 0.0, 0.0), 5, "c.png")])
    write_images(source, [(5, "PINHOLE", 4, 4, ())], [(1, None, None, 5, "c.png")])
    with pytest.raises(FileFormatError, match="camera 5") as info:
        load_scene(source, quiet=True)
    assert "images.bin" in str(info.value)


def test_missing_and_unrecognised_source(tmp_path):
    with pytest.raises(FileNotFoundError, match="source folder not found") as info:
        load_scene(tmp_path / "nope", quiet=True)
    assert str(tmp_path / "nope") in str(info.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not a recognised scene folder"):
        load_scene(tmp_path / "empty", quiet=True)
    (tmp_path / "empty" / "sparse").mkdir()
    with pytest.raises(FileNotFoundError, match="cameras.bin"):
        load_scene(tmp_path / "empty", quiet=True)
