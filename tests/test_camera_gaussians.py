"""Camera geometry (OpenCV axes, COLMAP intrinsics), look_at, and Gaussians initialisation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rasterizer.camera import Camera, focal_to_fov, fov_to_focal, look_at
from rasterizer.gaussians import Gaussians, mean_squared_knn_distance

SH_C0 = 0.28209479177387814


def random_pose(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    matrix = np.eye(4)
    matrix[:3, :3] = q
    matrix[:3, 3] = rng.uniform(-10, 10, size=3)
    return matrix


def project(camera: Camera, point) -> tuple[float, float, float]:
    """Continuous pixel position (COLMAP convention) and camera-space depth of a world point."""
    p = camera.world_to_camera @ torch.tensor([*point, 1.0], dtype=torch.float64)
    x, y, z = p[:3].tolist()
    return camera.fx * x / z + camera.cx, camera.fy * y / z + camera.cy, z


# ----- Camera -------------------------------------------------------------------------------
def test_center_is_camera_position():
    rng = np.random.default_rng(31)
    for _ in range(10):
        w2c = random_pose(rng)
        camera = Camera(100, 80, 90.0, 95.0, 50.0, 40.0, w2c)
        expected = -w2c[:3, :3].T @ w2c[:3, 3]
        np.testing.assert_allclose(camera.center.numpy(), expected, atol=1e-12)
        np.testing.assert_allclose(camera.camera_to_world[:3, 3].numpy(), expected, atol=1e-12)
        np.testing.assert_allclose((camera.world_to_camera @ camera.camera_to_world).numpy(),
                                   np.eye(4), atol=1e-12)
        assert camera.center.dtype == torch.float64
        # The centre maps to the camera origin.
        origin = camera.world_to_camera @ torch.cat([camera.center, torch.ones(1, dtype=torch.float64)])
        np.testing.assert_allclose(origin[:3].numpy(), 0.0, atol=1e-12)


def test_camera_normalises_inputs():
    w2c = torch.eye(4, dtype=torch.float32)
    camera = Camera(640.0, 480, 500, 400, 320, 240, w2c, image_name="a.png")
    assert type(camera.width) is int and type(camera.fx) is float
    assert camera.world_to_camera.dtype == torch.float64
    camera_np = Camera(640, 480, 500, 400, 320, 240, np.eye(4))
    assert torch.equal(camera_np.world_to_camera, camera.world_to_camera)
    torch.testing.assert_close(camera.intrinsics, torch.tensor(
        [[500.0, 0, 320], [0, 400, 240], [0, 0, 1]], dtype=torch.float64))


@pytest.mark.parametrize("kwargs", [
    dict(width=0), dict(height=-1), dict(fx=0.0), dict(fy=-5.0), dict(world_to_camera=np.eye(3)),
])
def test_camera_rejects_invalid(kwargs):
    args = dict(width=10, height=10, fx=10.0, fy=10.0, cx=5.0, cy=5.0, world_to_camera=np.eye(4))
    args.update(kwargs)
    with pytest.raises(ValueError):
        Camera(**args)


def test_fov():
    camera = Camera(200, 100, 100.0, 50.0, 100.0, 50.0, np.eye(4))
    assert camera.fov_x == pytest.approx(math.pi / 2, abs=1e-15)   # fx = W/2 -> 90 degrees
    assert camera.fov_y == pytest.approx(math.pi / 2, abs=1e-15)
    camera = Camera(1000, 500, 800.0, 700.0, 500.0, 250.0, np.eye(4))
    assert camera.fov_x == pytest.approx(2 * math.atan(1000 / (2 * 800.0)), rel=1e-15)
    assert camera.fov_y == pytest.approx(2 * math.atan(500 / (2 * 700.0)), rel=1e-15)
    for fov in (0.1, 0.7, 1.5, 2.5):
        assert focal_to_fov(fov_to_focal(fov, 640), 640) == pytest.approx(fov, rel=1e-12)
    centred = Camera.from_fov(640, 480, 1.0, 0.8, np.eye(4), image_name="x")
    assert (centred.cx, centred.cy) == (320.0, 240.0)
    assert centred.fov_x == pytest.approx(1.0, rel=1e-12)
    assert centred.fov_y == pytest.approx(0.8, rel=1e-12)
    square = Camera.from_fov(640, 480, 1.0, None, np.eye(4))
    assert square.fy == square.fx


def test_resized_scales_intrinsics():
    w2c = random_pose(np.random.default_rng(32))
    camera = Camera(1600, 1200, 1400.0, 1350.0, 790.5, 610.25, w2c, image_name="img.jpg")
    small = camera.resized(400, 300)
    assert (small.width, small.height) == (400, 300)
    assert (small.fx, small.fy, small.cx, small.cy) == (350.0, 337.5, 197.625, 152.5625)
    assert small.image_name == "img.jpg"
    assert torch.equal(small.world_to_camera, camera.world_to_camera)
    assert small.fov_x == pytest.approx(camera.fov_x, rel=1e-14)
    assert small.fov_y == pytest.approx(camera.fov_y, rel=1e-14)
    assert (camera.width, camera.fx) == (1600, 1400.0)  # the original is unchanged
    # A world point lands on the same relative image position.
    point = (camera.center + 5 * camera.camera_to_world[:3, 2] + 0.3 * camera.camera_to_world[:3, 0]).tolist()
    u, v, _ = project(camera, point)
    us, vs, _ = project(small, point)
    assert us == pytest.approx(u / 4, rel=1e-12) and vs == pytest.approx(v / 4, rel=1e-12)
    # Non-uniform resize scales x and y separately.
    odd = camera.resized(800, 900)
    assert (odd.fx, odd.cx, odd.fy, odd.cy) == (700.0, 395.25, 1350.0 * 0.75, 610.25 * 0.75)


def test_with_pose():
    camera = Camera(10, 10, 10.0, 10.0, 5.0, 5.0, np.eye(4))
    moved = camera.with_pose(look_at((0, 0, -5), (0, 0, 0)))
    assert moved.fx == camera.fx
    np.testing.assert_allclose(moved.center.numpy(), [0, 0, -5], atol=1e-12)


# ----- look_at ------------------------------------------------------------------------------
def test_look_at_random():
    rng = np.random.default_rng(33)
    for _ in range(50):
        eye = rng.uniform(-10, 10, size=3)
        target = rng.uniform(-10, 10, size=3)
        up = rng.standard_normal(3)
        w2c = look_at(eye, target, up)
        assert w2c.dtype == torch.float64 and w2c.shape == (4, 4)
        np.testing.assert_allclose(w2c[3].numpy(), [0, 0, 0, 1])
        rotation = w2c[:3, :3].numpy()
        np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(rotation) == pytest.approx(1.0, abs=1e-12)   # proper, not a reflection

        camera = Camera(640, 480, 500.0, 500.0, 300.0, 250.0, w2c)       # off-centre on purpose
        np.testing.assert_allclose(camera.center.numpy(), eye, atol=1e-10)
        u, v, z = project(camera, target)
        assert z == pytest.approx(np.linalg.norm(target - eye), rel=1e-12)
        assert z > 0
        assert u == pytest.approx(300.0, abs=1e-8) and v == pytest.approx(250.0, abs=1e-8)
        # OpenCV axes: camera z = forward; camera y = down = against `up`; x = right.
        forward = (target - eye) / np.linalg.norm(target - eye)
        np.testing.assert_allclose(rotation[2], forward, atol=1e-12)
        assert rotation[1] @ up < 0
        assert rotation[0] @ np.cross(forward, up) > 0
        # A point above the target appears above the principal point (smaller v).
        up_perp = up - (up @ forward) * forward
        _, v_above, _ = project(camera, target + 0.1 * up_perp / np.linalg.norm(up_perp))
        assert v_above < 250.0


def test_look_at_default_up_and_axes():
    # Camera on +z looking at the origin with y up: image right = world +x, image down = world -y.
    w2c = look_at((0, 0, 5), (0, 0, 0))
    np.testing.assert_allclose(w2c[:3, :3].numpy(), [[1, 0, 0], [0, -1, 0], [0, 0, -1]], atol=1e-15)
    np.testing.assert_allclose(w2c[:3, 3].numpy(), [0, 0, 5], atol=1e-15)
    camera = Camera(100, 100, 50.0, 50.0, 50.0, 50.0, w2c)
    u, v, z = project(camera, (1.0, 0.0, 0.0))
    assert u > 50 and v == pytest.approx(50.0) and z == pytest.approx(5.0)
    u, v, z = project(camera, (0.0, 1.0, 0.0))
    assert v < 50 and u == pytest.approx(50.0)
    # Tensor and tuple inputs agree.
    torch.testing.assert_close(look_at(torch.tensor([0.0, 0.0, 5.0]), np.zeros(3)), w2c)


def test_look_at_parallel_up_raises():
    with pytest.raises(ValueError):
        look_at((0, 5, 0), (0, 0, 0), up=(0, 1, 0))


# ----- mean_squared_knn_distance ------------------------------------------------------------
def brute_force(points: np.ndarray, k: int = 3, floor: float = 1e-7) -> np.ndarray:
    points = points.astype(np.float64)
    d2 = ((points[:, None, :] - points[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d2, np.inf)  # other points only (a duplicate still counts, at distance 0)
    k = min(k, len(points) - 1)
    return np.maximum(np.sort(d2, axis=1)[:, :k].mean(axis=1), floor)


@pytest.mark.parametrize("n", [2, 3, 4, 10, 300])
def test_knn_matches_brute_force(n):
    rng = np.random.default_rng(34 + n)
    points = rng.standard_normal((n, 3)) * rng.uniform(0.01, 100)
    np.testing.assert_allclose(mean_squared_knn_distance(points), brute_force(points), rtol=1e-10)


def test_knn_anisotropic_cloud_and_float32():
    rng = np.random.default_rng(35)
    points = (rng.standard_normal((500, 3)) * [10.0, 1.0, 0.01]).astype(np.float32)
    result = mean_squared_knn_distance(points)
    assert result.shape == (500,)
    np.testing.assert_allclose(result, brute_force(points), rtol=1e-6)


def test_knn_duplicates_floored():
    rng = np.random.default_rng(36)
    points = rng.standard_normal((50, 3))
    points[10:14] = points[10]           # four identical points: 3 neighbours at distance 0
    points[20:22] = points[20]           # a pair: one neighbour at 0, two further away
    result = mean_squared_knn_distance(points)
    np.testing.assert_allclose(result, brute_force(points), rtol=1e-10)
    assert np.all(result[10:14] == 1e-7)
    assert np.all(result[20:22] > 1e-7)
    assert np.all(result >= 1e-7)
    same = np.zeros((5, 3))
    assert np.all(mean_squared_knn_distance(same) == 1e-7)


def test_knn_tiny_inputs():
    assert mean_squared_knn_distance(np.zeros((0, 3))).shape == (0,)
    assert mean_squared_knn_distance(np.ones((1, 3))).tolist() == [1e-7]
    pair = np.array([[0.0, 0, 0], [3.0, 4.0, 0]])
    assert mean_squared_knn_distance(pair).tolist() == [25.0, 25.0]


# ----- Gaussians ----------------------------------------------------------------------------
def test_from_points_initialisation():
    rng = np.random.default_rng(37)
    n = 200
    xyz = rng.uniform(-1, 1, size=(n, 3)).astype(np.float32)
    xyz[7] = xyz[3]
    rgb = rng.uniform(0, 1, size=(n, 3)).astype(np.float32)
    g = Gaussians.from_points(xyz, rgb)

    assert len(g) == n and g.sh_degree == 3
    assert g.sh_rest.shape == (n, 15, 3) and torch.count_nonzero(g.sh_rest) == 0
    assert torch.equal(g.means, torch.from_numpy(xyz))
    np.testing.assert_allclose((0.5 + SH_C0 * g.sh_dc[:, 0, :]).numpy(), rgb, atol=1e-6)
    np.testing.assert_allclose(g.sh_dc[:, 0, :].numpy(), (rgb - 0.5) / SH_C0, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(g.opacities.numpy(), 0.1, rtol=1e-6)
    np.testing.assert_allclose(g.opacity_logits.numpy(), math.log(0.1 / 0.9), rtol=1e-6)
    expected = 0.5 * np.log(brute_force(xyz))
    np.testing.assert_allclose(g.log_scales.numpy(), np.repeat(expected[:, None], 3, axis=1),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g.scales[7].numpy(), g.scales[3].numpy())
    assert torch.equal(g.quaternions, torch.tensor([1.0, 0, 0, 0]).expand(n, 4))
    for tensor in g.tensors().values():
        assert tensor.dtype == torch.float32 and tensor.device.type == "cpu"


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_from_points_degree_and_opacity(degree):
    xyz = np.random.default_rng(38).standard_normal((20, 3))
    g = Gaussians.from_points(xyz, np.full((20, 3), 0.5), sh_degree=degree, initial_opacity=0.3)
    assert g.sh_degree == degree and g.sh_rest.shape == (20, (degree + 1) ** 2 - 1, 3)
    assert torch.count_nonzero(g.sh_dc) == 0   # grey -> zero DC
    np.testing.assert_allclose(g.opacities.numpy(), 0.3, rtol=1e-6)


def test_gaussians_shape_validation():
    n = 4
    good = dict(means=torch.zeros(n, 3), sh_dc=torch.zeros(n, 1, 3), sh_rest=torch.zeros(n, 15, 3),
                opacity_logits=torch.zeros(n), log_scales=torch.zeros(n, 3), quaternions=torch.zeros(n, 4))
    Gaussians(**good)
    for name, bad in [("means", torch.zeros(n, 2)), ("sh_dc", torch.zeros(n, 3)),
                      ("sh_rest", torch.zeros(n, 14, 3)), ("sh_rest", torch.zeros(n, 15, 4)),
                      ("opacity_logits", torch.zeros(n, 1)), ("log_scales", torch.zeros(n + 1, 3)),
                      ("quaternions", torch.zeros(n, 3))]:
        with pytest.raises(ValueError):
            Gaussians(**dict(good, **{name: bad}))


def test_gaussians_activations_and_sh_degree():
    g = Gaussians(torch.zeros(2, 3), torch.ones(2, 1, 3), torch.full((2, 8, 3), 2.0),
                  torch.tensor([0.0, 2.0]), torch.log(torch.tensor([[1.0, 2.0, 3.0]] * 2)),
                  torch.tensor([[2.0, 0, 0, 0], [0, 0, 3.0, 4.0]]))
    assert g.sh_degree == 2
    assert g.sh.shape == (2, 9, 3) and torch.equal(g.sh[:, 0], g.sh_dc[:, 0])
    torch.testing.assert_close(g.opacities, torch.sigmoid(torch.tensor([0.0, 2.0])))
    torch.testing.assert_close(g.scales, torch.tensor([[1.0, 2.0, 3.0]] * 2))
    torch.testing.assert_close(g.rotations, torch.tensor([[1.0, 0, 0, 0], [0, 0, 0.6, 0.8]]))
    assert g.with_sh_degree(3).sh_rest.shape == (2, 15, 3)
    assert torch.count_nonzero(g.with_sh_degree(3).sh_rest[:, 8:]) == 0
    assert torch.equal(g.with_sh_degree(1).sh_rest, g.sh_rest[:, :3])
    assert g.with_sh_degree(0).sh_degree == 0
