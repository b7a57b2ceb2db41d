"""``splat-convert`` without SfM: undistortion of a distorted COLMAP scene (geometry and pixels
checked against an independent SIMPLE_RADIAL model written here), resizing, the safety rules
and the error messages. The SfM run itself is in test_convert_sfm.py."""

from __future__ import annotations

import contextlib
import io
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import SHARED_DATA

pycolmap = pytest.importorskip("pycolmap")

from trainer.cli.convert import main  # noqa: E402  (after the importorskip)
from trainer.convert import (ConvertError, _check_registration, principal_plane_transform,  # noqa: E402
                             resize_images)
from trainer.scene import load_scene  # noqa: E402

# A progress line: "[1/1] undistortion: 71 images -> PINHOLE in ..., 3.1 s".
PROGRESS = re.compile(r"^\[(\d+)/(\d+)\] (\w+): (.*), (\d+\.\d) s$", re.MULTILINE)


# ----- an independent camera model (not COLMAP's code) ------------------------------------------
def radial_distort(xn: np.ndarray, yn: np.ndarray, k: float) -> tuple[np.ndarray, np.ndarray]:
    """SIMPLE_RADIAL on normalised coordinates: ``x_d = x (1 + k r^2)``."""
    factor = 1.0 + k * (xn * xn + yn * yn)
    return xn * factor, yn * factor


def radial_undistort(xd: np.ndarray, yd: np.ndarray, k: float) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`radial_distort` by fixed-point iteration (k ~ 0.03: converges fast)."""
    xn, yn = xd.copy(), yd.copy()
    for _ in range(50):
        factor = 1.0 + k * (xn * xn + yn * yn)
        xn, yn = xd / factor, yd / factor
    return xn, yn


def project(camera_from_world: np.ndarray, xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normalised image coordinates (x/z, y/z) of world points [N, 3] in a 3x4 ``[R | t]``."""
    cam = xyz @ camera_from_world[:, :3].T + camera_from_world[:, 3]
    assert (cam[:, 2] > 0).all(), "a point behind its camera"
    return cam[:, 0] / cam[:, 2], cam[:, 1] / cam[:, 2]


def observations(reconstruction) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """image name -> (point2D indices, their 2D positions [N, 2], their 3D points [N, 3])."""
    result = {}
    for image in reconstruction.images.values():
        rows = [(i, p.xy, reconstruction.points3D[p.point3D_id].xyz)
                for i, p in enumerate(image.points2D) if p.has_point3D()]
        index, xy, xyz = zip(*rows)
        result[image.name] = (np.array(index), np.array(xy), np.array(xyz))
    return result


# ----- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def beer_pinhole(tmp_path_factory) -> tuple[Path, Path, str]:
    """(beer scene, its undistorted copy made by ``splat-convert --undistort_only``, stdout)."""
    beer = SHARED_DATA / "beer"
    if not beer.is_dir():
        pytest.skip(f"development data {beer} not available")
    out = tmp_path_factory.mktemp("convert") / "beer_pinhole"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["--undistort_only", "-s", str(beer), "-o", str(out)])
    assert code == 0
    return beer, out, stdout.getvalue()


# ----- undistortion of shared/data/beer --------------------------------------------------------
def test_undistorted_beer_reprojects_like_the_distorted_model(beer_pinhole):
    """Geometry: every observation of every sparse point of the distorted model, checked in the
    new PINHOLE model.

    For a 3D point X seen in image i: ``p_d`` = X projected by the *distorted* model (its pose
    and SIMPLE_RADIAL camera, evaluated by the independent model above) and mapped through the
    undistortion (inverse radial, then the new K); ``p_u`` = X (from the new model) projected by
    the *new* pose and PINHOLE camera. Both are where X must appear in the undistorted image, so
    they must agree within 0.5 px: a wrong focal length, principal point (e.g. a crop not
    accounted for), pose or point moves them apart. Separately the new model's stored 2D
    keypoints must be the distorted keypoints mapped through the same undistortion (so the
    SfM residuals carry over), and the new cameras must be PINHOLE.
    """
    beer, out, _ = beer_pinhole
    old = pycolmap.Reconstruction(str(beer / "sparse" / "0"))
    new = pycolmap.Reconstruction(str(out / "sparse" / "0"))
    assert {c.model.name for c in old.cameras.values()} == {"SIMPLE_RADIAL"}
    assert {c.model.name for c in new.cameras.values()} == {"PINHOLE"}
    assert new.num_points3D() == old.num_points3D() and new.num_reg_images() == old.num_reg_images() == 71
    new_obs = observations(new)
    worst_projection = worst_keypoint = 0.0
    count = 0
    for name, (index, xy_d, xyz_d) in observations(old).items():
        image_d = old.find_image_with_name(name)
        image_u = new.find_image_with_name(name)
        f, cx, cy, k = old.cameras[image_d.camera_id].params
        fx, fy, ux, uy = new.cameras[image_u.camera_id].params
        index_u, xy_u, xyz_u = new_obs[name]
        assert np.array_equal(index_u, index)  # the same observations, in the same order

        def to_new_pixels(xd: np.ndarray, yd: np.ndarray) -> np.ndarray:
            xn, yn = radial_undistort(xd, yd, k)
            return np.stack([fx * xn + ux, fy * yn + uy], axis=1)

        xn, yn = project(image_d.cam_from_world().matrix(), xyz_d)
        p_d = to_new_pixels(*radial_distort(xn, yn, k))
        xn, yn = project(image_u.cam_from_world().matrix(), xyz_u)
        p_u = np.stack([fx * xn + ux, fy * yn + uy], axis=1)
        worst_projection = max(worst_projection, np.abs(p_u - p_d).max())
        keypoints = to_new_pixels((xy_d[:, 0] - cx) / f, (xy_d[:, 1] - cy) / f)
        worst_keypoint = max(worst_keypoint, np.abs(xy_u - keypoints).max())
        count += len(index)
    assert count > 30_000  # every observation of the 4414 points was checked
    assert worst_projection < 0.5, f"pinhole reprojection off by {worst_projection:.3f} px"
    assert worst_keypoint < 0.5, f"undistorted keypoints off by {worst_keypoint:.3f} px"


def test_undistorted_beer_pixels_are_the_distorted_photo_resampled(beer_pinhole):
    """Pixels: the undistorted image at pixel centre (u+0.5, v+0.5) must show what the original
    photo shows at the distorted position of that ray (independent model, bilinear sampling).
    JPEG re-encoding leaves about 0.1 grey levels of mean difference; a warp off by half a pixel
    gives 0.35 to 0.5 on these smooth photos, so the bound is 0.3 (and the test checks that a 1 px
    shift of the sampling positions does raise the difference)."""
    beer, out, _ = beer_pinhole
    old = pycolmap.Reconstruction(str(beer / "sparse" / "0"))
    new = pycolmap.Reconstruction(str(out / "sparse" / "0"))
    for name in ("0000.jpg", "0035.jpg", "0070.jpg"):
        f, cx, cy, k = old.cameras[old.find_image_with_name(name).camera_id].params
        camera = new.cameras[new.find_image_with_name(name).camera_id]
        fx, fy, ux, uy = camera.params
        photo = np.asarray(Image.open(beer / "images" / name).convert("L"), dtype=np.float64)
        undistorted = np.asarray(Image.open(out / "images" / name).convert("L"), dtype=np.float64)
        assert undistorted.shape == (camera.height, camera.width)
        # A grid of pixels away from the border (where COLMAP leaves blank padding, if any).
        v, u = np.mgrid[20:camera.height - 20:3, 20:camera.width - 20:3]
        xd, yd = radial_distort((u + 0.5 - ux) / fx, (v + 0.5 - uy) / fy, k)
        expected = undistorted[v, u]

        def error(shift: float) -> float:
            # COLMAP continuous coordinates put pixel centres at +0.5: index = position - 0.5.
            sampled = bilinear(photo, f * xd + cx - 0.5 + shift, f * yd + cy - 0.5)
            return float(np.abs(sampled - expected).mean())

        assert error(0.0) < 0.3, f"{name}: mean difference {error(0.0):.2f} grey levels"
        assert error(1.0) > 2 * error(0.0), f"{name}: the check cannot see a 1 px shift"


def bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear sample of a [H, W] array at pixel-index coordinates (x right, y down)."""
    x0 = np.clip(np.floor(x).astype(int), 0, image.shape[1] - 2)
    y0 = np.clip(np.floor(y).astype(int), 0, image.shape[0] - 2)
    ax, ay = x - x0, y - y0
    top = image[y0, x0] * (1 - ax) + image[y0, x0 + 1] * ax
    bottom = image[y0 + 1, x0] * (1 - ax) + image[y0 + 1, x0 + 1] * ax
    return top * (1 - ay) + bottom * ay


def test_undistorted_beer_loads_in_the_trainer(beer_pinhole):
    """The trainer refuses the distorted scene but loads the converted one: 71 views whose
    cameras match their image files."""
    beer, out, stdout = beer_pinhole
    scene = load_scene(out, quiet=True)
    try:
        assert len(scene.train_views) == 71
        for view in scene.train_views:
            with Image.open(view.image_path) as image:
                assert image.size == (view.original_camera.width, view.original_camera.height)
    finally:
        scene.close()
    stages = PROGRESS.findall(stdout)
    assert [(s[0], s[1], s[2]) for s in stages] == [("1", "1", "undistortion")]
    assert stages[0][3].startswith("71 images -> PINHOLE")


def test_reconverting_keeps_foreign_files_and_drops_the_stale_point_cache(beer_pinhole, tmp_path, capsys):
    """A second conversion into an earlier output replaces our files, leaves other files alone
    and removes the trainer's points3D.ply cache (it would shadow the new points3D.bin)."""
    beer, first, _ = beer_pinhole
    out = tmp_path / "again"
    shutil.copytree(first, out)
    (out / "images" / "notes.txt").write_text("mine")
    (out / "sparse" / "0" / "points3D.ply").write_text("stale cache")
    (out / "images" / "0000.jpg").write_bytes(b"old")
    assert main(["--undistort_only", "-s", str(beer), "-o", str(out)]) == 0
    assert (out / "images" / "notes.txt").read_text() == "mine"
    assert not (out / "sparse" / "0" / "points3D.ply").exists()
    assert (out / "images" / "0000.jpg").read_bytes() == (first / "images" / "0000.jpg").read_bytes()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging folder left


# ----- refusals and errors ----------------------------------------------------------------------
def test_refuses_to_write_over_foreign_images(shared_data, tmp_path, capsys):
    """An images/ folder that is not an earlier conversion's output (no sparse model) holds
    someone's photos: refuse, name it, leave it untouched."""
    beer = shared_data("beer")
    out = tmp_path / "out"
    (out / "images").mkdir(parents=True)
    (out / "images" / "0000.jpg").write_bytes(b"precious")
    assert main(["--undistort_only", "-s", str(beer), "-o", str(out)]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and str(out / "images") in error and "Traceback" not in error
    assert (out / "images" / "0000.jpg").read_bytes() == b"precious"
    assert main(["--undistort_only", "-s", str(beer), "-o", str(beer)]) == 1
    assert "overwrite the originals" in capsys.readouterr().err


def test_missing_input_folder_is_one_clear_line(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    assert main(["-s", str(tmp_path)]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and str(tmp_path / "input") in error and "folder not found" in error


def test_missing_photo_of_the_model_is_named(shared_data, tmp_path, capsys):
    """--skip_matching with a model whose photo is gone: exit 1 naming the missing photo."""
    beer = shared_data("beer")
    (tmp_path / "distorted").mkdir()
    shutil.copytree(beer / "sparse", tmp_path / "distorted" / "sparse")
    (tmp_path / "input").mkdir()
    for photo in sorted((beer / "images").iterdir())[1:]:
        (tmp_path / "input" / photo.name).symlink_to(photo)
    assert main(["-s", str(tmp_path), "--skip_matching"]) == 1
    error = capsys.readouterr().err
    assert "0000.jpg" in error and "missing" in error and not (tmp_path / "sparse").exists()


@pytest.mark.parametrize("argv, message", [
    (["--undistort_only", "-s", "x"], "needs -o"),
    (["-s", "x", "-o", "y"], "only used with --undistort_only"),
    (["-s", "x", "--camera", "FISH"], "unknown camera model"),
    (["-s", "x", "--matcher", "vocab"], "invalid choice"),
])
def test_argument_errors_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_unrelated_photos_fail_naming_those_left_out(tmp_path, capsys):
    """Three noise images share no geometry: nothing registers, the error names all three."""
    rng = np.random.default_rng(0)
    (tmp_path / "input").mkdir()
    for name in ("a.png", "b.png", "c.png"):
        Image.fromarray(rng.integers(0, 256, (160, 160), dtype=np.uint8)).save(tmp_path / "input" / name)
    assert main(["-s", str(tmp_path), "--no_gpu"]) == 1
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert "0 of 3 photos registered" in captured.err and "a.png, b.png, c.png" in captured.err
    assert [m[2] for m in PROGRESS.findall(captured.out)] == ["features", "matching", "mapping"]
    assert not (tmp_path / "images").exists()


def test_registration_threshold():
    names = [f"{i:02d}.jpg" for i in range(10)]
    assert _check_registration(names[:5], names, Path("m"), 0.5) == names[5:]
    with pytest.raises(ConvertError, match=r"only 4 of 10 .*04\.jpg, 05\.jpg, 06\.jpg, 07\.jpg, 08\.jpg, 09\.jpg"):
        _check_registration(names[:4], names, Path("m"), 0.5)
    with pytest.raises(ConvertError, match="need 2"):  # two views at least, whatever the fraction
        _check_registration(names[:1], names, Path("m"), 0.0)


# ----- resizing ---------------------------------------------------------------------------------
def test_resize_halves_like_imagemagick(tmp_path):
    """images_2/4/8 sizes are ImageMagick's ``-resize 50%/25%/12.5%`` (rounded half up) and the
    content is the image scaled down (a left-dark, right-bright split stays where it was)."""
    (tmp_path / "images" / "sub").mkdir(parents=True)
    pixels = np.zeros((50, 101, 3), dtype=np.uint8)
    pixels[:, 51:] = 200
    Image.fromarray(pixels).save(tmp_path / "images" / "sub" / "a.png")
    assert resize_images(tmp_path, ["sub/a.png"]) == 3
    sizes = {f: Image.open(tmp_path / f"images_{f}" / "sub" / "a.png").size for f in (2, 4, 8)}
    assert sizes == {2: (51, 25), 4: (25, 13), 8: (13, 6)}
    half = np.asarray(Image.open(tmp_path / "images_2" / "sub" / "a.png"), dtype=float)
    assert half[:, :20].mean() < 5 and half[:, 31:].mean() > 195


def test_photos_of_different_sizes_need_camera_per_image(tmp_path, capsys):
    """One shared camera (the default) needs one photo size; COLMAP skips the others, and the
    error says which and what to do instead of failing later with nothing registered."""
    rng = np.random.default_rng(1)
    (tmp_path / "input").mkdir()
    for name, width in (("a.png", 160), ("b.png", 176), ("c.png", 176)):
        Image.fromarray(rng.integers(0, 256, (160, width), dtype=np.uint8)).save(tmp_path / "input" / name)
    assert main(["-s", str(tmp_path), "--no_gpu"]) == 1
    error = capsys.readouterr().err
    assert "2 photo(s) are not 160x160 like a.png" in error and "--camera_per_image" in error
    assert "b.png, c.png" in error and error.count("\n") == 1


def test_principal_plane_alignment_puts_the_points_on_z0_with_cameras_above():
    """A tilted, offset 4 x 2 sheet of points with cameras on one side: after the transform the
    sheet lies in z = 0 centred at the origin, its long side along x, the cameras at z > 0, and
    the transform is a proper rotation (no mirror)."""
    rng = np.random.default_rng(2)
    sheet = np.column_stack([rng.uniform(-2, 2, 500), rng.uniform(-1, 1, 500), np.zeros(500)])
    cameras = np.column_stack([rng.uniform(-1, 1, 8), rng.uniform(-1, 1, 8), np.full(8, -3.0)])
    tilt = pycolmap.Rotation3d(np.array([0.4, -0.7, 0.2])).matrix()
    offset = np.array([5.0, -1.0, 2.0])
    transform = principal_plane_transform(sheet @ tilt.T + offset, cameras @ tilt.T + offset)
    rotation, translation = transform[:, :3], transform[:, 3]
    assert np.allclose(rotation @ rotation.T, np.eye(3)) and np.isclose(np.linalg.det(rotation), 1)
    points = (sheet @ tilt.T + offset) @ rotation.T + translation
    assert np.abs(points[:, 2]).max() < 1e-9 and np.allclose(points.mean(0), 0, atol=1e-9)
    assert np.ptp(points[:, 0]) > 3.5 and np.ptp(points[:, 1]) < 2.1  # long side along x
    assert ((cameras @ tilt.T + offset) @ rotation.T + translation)[:, 2].min() > 2.9
