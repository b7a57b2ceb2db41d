"""``splat-convert`` end to end on 12 real photos (frames of shared/data/beer): SIFT, matching,
incremental mapping, undistortion and resizing on the CPU, then the trainer loads the result.

Takes about 15 s on 2 cores, so it is not marked slow."""

from __future__ import annotations

import contextlib
import io
import re
import shutil

import numpy as np
import pytest
from PIL import Image

pycolmap = pytest.importorskip("pycolmap")

from trainer.cli.convert import main  # noqa: E402  (after the importorskip)
from trainer.scene import colmap, load_scene  # noqa: E402

PROGRESS = re.compile(r"^\[(\d+)/(\d+)\] (\w+): (.*), (\d+\.\d) s$", re.MULTILINE)
# The first 12 frames: one continuous stretch of the video (the frame names jump to another part
# of the path after 0013, 0034 and 0052), with enough baseline to triangulate.
FRAMES = [f"{i:04d}.jpg" for i in range(12)]


def umeyama(source: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Similarity (scale, R, t) minimising |s R source + t - target|^2 over [N, 3] point sets."""
    mu_s, mu_t = source.mean(0), target.mean(0)
    a, b = source - mu_s, target - mu_t
    u, sigma, vt = np.linalg.svd(b.T @ a / len(a))
    d = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    rotation = u @ d @ vt
    scale = float(np.trace(np.diag(sigma) @ d) / (a * a).sum(1).mean())
    return scale, rotation, mu_t - scale * rotation @ mu_s


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """(LOCATION after ``splat-convert -s LOCATION --resize``, its stdout)."""
    from conftest import SHARED_DATA

    beer = SHARED_DATA / "beer"
    if not beer.is_dir():
        pytest.skip(f"development data {beer} not available")
    root = tmp_path_factory.mktemp("sfm") / "scene"
    (root / "input").mkdir(parents=True)
    for name in FRAMES:
        shutil.copy(beer / "images" / name, root / "input" / name)
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["-s", str(root), "--resize", "--no_gpu"])
    assert code == 0, stdout.getvalue()
    return root, stdout.getvalue()


def test_sfm_registers_most_photos_and_reports_each_stage(converted):
    root, stdout = converted
    stages = PROGRESS.findall(stdout)
    assert [s[2] for s in stages] == ["features", "matching", "mapping", "undistortion", "resize"]
    assert all(s[1] == "5" for s in stages)
    assert re.match(r"12 images, \d+ keypoints$", stages[0][3])
    assert re.match(r"66 pairs, \d+ verified", stages[1][3])  # exhaustive: 12 * 11 / 2 pairs
    registered = int(re.match(r"(\d+) of 12 images registered", stages[2][3]).group(1))
    assert registered >= 9
    for folder in ("distorted/database.db", "distorted/sparse/0/cameras.bin", "sparse/0/images.bin"):
        assert (root / folder).exists(), folder


def test_sfm_model_is_pinhole_and_the_trainer_loads_it(converted):
    root, _ = converted
    model = root / "sparse" / "0"
    cameras, _ = colmap.read_cameras(model)
    assert len(cameras) == 1 and next(iter(cameras.values())).model == "PINHOLE"  # one shared camera
    distorted, _ = colmap.read_cameras(root / "distorted" / "sparse" / "0")
    assert next(iter(distorted.values())).model == "OPENCV"
    scene = load_scene(root, quiet=True)
    try:
        assert len(scene.train_views) >= 9 and len(scene.point_cloud) > 200
        for view in scene.train_views:
            with Image.open(view.image_path) as image:
                assert image.size == (view.original_camera.width, view.original_camera.height)
        quarter = load_scene(root, images="images_4", quiet=True)  # the --resize output
        try:
            shape = tuple(quarter.images.get(quarter.train_views[0].index).shape[:2])
        finally:
            quarter.close()
        camera = quarter.train_views[0].original_camera
        assert shape == (int(camera.height / 4 + 0.5), int(camera.width / 4 + 0.5))
    finally:
        scene.close()
    assert 0 < pycolmap.Reconstruction(str(model)).compute_mean_reprojection_error() < 1.5


def test_sfm_camera_path_matches_the_reference_reconstruction(converted):
    """The recovered camera centres, aligned by a similarity to those of the beer model (made
    with COLMAP on all 71 frames), lie within 5 % of the path's extent: the poses are right,
    not merely registered."""
    from conftest import SHARED_DATA

    root, _ = converted
    ours = pycolmap.Reconstruction(str(root / "sparse" / "0"))
    reference = pycolmap.Reconstruction(str(SHARED_DATA / "beer" / "sparse" / "0"))
    names = sorted(ours.images[i].name for i in ours.reg_image_ids())
    source = np.array([ours.find_image_with_name(n).projection_center() for n in names])
    target = np.array([reference.find_image_with_name(n).projection_center() for n in names])
    scale, rotation, translation = umeyama(source, target)
    aligned = scale * source @ rotation.T + translation
    extent = np.linalg.norm(target - target.mean(0), axis=1).max()
    assert np.linalg.norm(aligned - target, axis=1).max() < 0.05 * extent


def test_sfm_model_is_aligned_to_the_principal_plane(converted):
    """The reference's plane alignment: points centred at the origin, their least-spread axis
    along z, the cameras above (z > 0); the progress line says so."""
    root, stdout = converted
    model = pycolmap.Reconstruction(str(root / "distorted" / "sparse" / "0"))
    points = np.array([p.xyz for p in model.points3D.values()])
    centres = np.array([model.images[i].projection_center() for i in model.reg_image_ids()])
    assert np.allclose(points.mean(0), 0, atol=1e-6 * np.abs(points).max())
    _, _, axes = np.linalg.svd(points, full_matrices=False)
    assert abs(axes[2][2]) > 0.999  # the plane normal is the z axis
    assert centres[:, 2].mean() > 0
    assert "aligned to the principal plane" in stdout
