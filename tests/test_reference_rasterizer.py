"""The reference rasterizer (``rasterizer/reference.py``) against a brute-force renderer.

``brute_force`` below re-derives every number from the graphdeco description (spec §5.2-5.4)
in float64 with plain per-pixel loops, independently of ``reference.py``: near cull, EWA
covariance with the principal-point-centred clamp, 0.3 dilation, AA opacity factor, 3-sigma
radius with the 0.1 eigenvalue floor, 16x16 tile rectangles, depth order, the alpha rules
and the 1e-4 early stop. The reference must match it to float64 rounding, on the no-grad
(blocked) path and on the differentiable (checkpointed) path alike.
"""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import rasterizer.reference as reference
from rasterizer import Camera, Gaussians, look_at, render
from rasterizer.render import available_backends

F64 = torch.float64
BACKGROUND = (0.2, 0.5, 0.9)
SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005,
         -1.0925484305920792, 0.5462742152960396)
SH_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
         -0.4570457994644658, 1.445305721320277, -0.5900435899266435)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The scenes here are tiny: intra-op threads only add overhead, and on a busy 2-core
    machine OpenMP wake-ups made the gradchecks ~10x slower. Restored afterwards; the memory
    test runs in a subprocess with torch's default."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# ----- brute force ----------------------------------------------------------------------------
def _sh_basis(d: np.ndarray, degree: int) -> list[float]:
    x, y, z = d
    basis = [SH_C0]
    if degree >= 1:
        basis += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        basis += [SH_C2[0] * x * y, SH_C2[1] * y * z, SH_C2[2] * (2 * zz - xx - yy),
                  SH_C2[3] * x * z, SH_C2[4] * (xx - yy)]
    if degree >= 3:
        basis += [SH_C3[0] * y * (3 * xx - yy), SH_C3[1] * x * y * z,
                  SH_C3[2] * y * (4 * zz - xx - yy), SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy),
                  SH_C3[4] * x * (4 * zz - xx - yy), SH_C3[5] * z * (xx - yy),
                  SH_C3[6] * x * (xx - 3 * yy)]
    return basis


def _rotation(q: np.ndarray) -> np.ndarray:
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def brute_force(gaussians: Gaussians, camera: Camera, background=BACKGROUND, sh_degree=None,
                scaling_modifier=1.0, antialiasing=False, early_stop=True) -> dict:
    """Per-pixel float64 render. Returns image [3,H,W], alpha, inv_depth, radii [N] (torch),
    and ``stopped``: how many pixels hit the 1e-4 transmittance rule."""
    p = {k: v.detach().cpu().double().numpy() for k, v in gaussians.tensors().items()}
    degree = gaussians.sh_degree if sh_degree is None else sh_degree
    w2c = camera.world_to_camera.numpy()
    rot, trans = w2c[:3, :3], w2c[:3, 3]
    centre = -rot.T @ trans
    width, height = camera.width, camera.height
    fx, fy, cx, cy = camera.fx, camera.fy, camera.cx, camera.cy
    tiles_x, tiles_y = (width + 15) // 16, (height + 15) // 16
    lim_x = (-(cx / fx + 0.3 * width / (2 * fx)), (width - cx) / fx + 0.3 * width / (2 * fx))
    lim_y = (-(cy / fy + 0.3 * height / (2 * fy)), (height - cy) / fy + 0.3 * height / (2 * fy))
    n = p["means"].shape[0]
    radii = np.zeros(n, dtype=np.int64)
    items = []
    for i in range(n):
        x, y, z = rot @ p["means"][i] + trans
        if z <= 0.2:
            continue
        mx, my = fx * x / z + cx - 0.5, fy * y / z + cy - 0.5
        tx = min(max(x / z, lim_x[0]), lim_x[1]) * z
        ty = min(max(y / z, lim_y[0]), lim_y[1]) * z
        jac = np.array([[fx / z, 0.0, -fx * tx / z ** 2], [0.0, fy / z, -fy * ty / z ** 2]])
        m = _rotation(p["quaternions"][i]) @ np.diag(np.exp(p["log_scales"][i]) * scaling_modifier)
        t = jac @ rot
        cov = t @ (m @ m.T) @ t.T
        a, b, c = cov[0, 0] + 0.3, cov[0, 1], cov[1, 1] + 0.3
        det = a * c - b * b
        if det == 0:
            continue
        opacity = 1.0 / (1.0 + math.exp(-p["opacity_logits"][i]))
        if antialiasing:
            det_orig = cov[0, 0] * cov[1, 1] - cov[0, 1] ** 2
            opacity *= math.sqrt(max(2.5e-5, det_orig / det))
        mid = 0.5 * (a + c)
        radius = math.ceil(3.0 * math.sqrt(mid + math.sqrt(max(0.1, mid * mid - det))))
        rect = (min(tiles_x, max(0, math.floor((mx - radius) / 16))),
                min(tiles_y, max(0, math.floor((my - radius) / 16))),
                min(tiles_x, max(0, math.floor((mx + radius + 15) / 16))),
                min(tiles_y, max(0, math.floor((my + radius + 15) / 16))))
        if (rect[2] - rect[0]) * (rect[3] - rect[1]) == 0:
            continue
        radii[i] = radius
        d = p["means"][i] - centre
        d = d / np.linalg.norm(d)
        sh = np.concatenate([p["sh_dc"][i], p["sh_rest"][i]])[: (degree + 1) ** 2]
        colour = np.maximum(0.0, np.asarray(_sh_basis(d, degree)) @ sh + 0.5)
        items.append((z, i, mx, my, c / det, -b / det, a / det, opacity, colour, rect))
    items.sort(key=lambda item: (item[0], item[1]))

    image = np.zeros((3, height, width))
    alpha_image = np.zeros((height, width))
    inv_depth = np.zeros((height, width))
    stopped = 0
    for py in range(height):
        for px in range(width):
            tile_x, tile_y = px // 16, py // 16
            trans_ = 1.0
            colour_sum = np.zeros(3)
            depth_sum = 0.0
            for z, _, mx, my, ca, cb, cc, opacity, colour, rect in items:
                if not (rect[0] <= tile_x < rect[2] and rect[1] <= tile_y < rect[3]):
                    continue
                dx, dy = mx - px, my - py
                power = -0.5 * (ca * dx * dx + cc * dy * dy) - cb * dx * dy
                if power > 0:
                    continue
                alpha = min(0.99, opacity * math.exp(power))
                if alpha < 1.0 / 255.0:
                    continue
                if early_stop and trans_ * (1 - alpha) < 1e-4:
                    stopped += 1
                    break
                colour_sum += colour * alpha * trans_
                depth_sum += alpha * trans_ / z
                trans_ *= 1 - alpha
            image[:, py, px] = colour_sum + trans_ * np.asarray(background)
            alpha_image[py, px] = 1 - trans_
            inv_depth[py, px] = depth_sum
    return {"image": torch.from_numpy(image), "alpha": torch.from_numpy(alpha_image),
            "inv_depth": torch.from_numpy(inv_depth), "radii": torch.from_numpy(radii),
            "stopped": stopped}


# ----- scenes ---------------------------------------------------------------------------------
def random_gaussians(n: int, seed: int, sh_degree: int = 3, spread: float = 0.6,
                     log_scale: float = -1.5, opacity_shift: float = 1.0,
                     rest_scale: float = 0.15) -> Gaussians:
    gen = torch.Generator().manual_seed(seed)
    k = (sh_degree + 1) ** 2
    return Gaussians(
        means=torch.randn(n, 3, generator=gen, dtype=F64) * spread,
        sh_dc=torch.randn(n, 1, 3, generator=gen, dtype=F64) * 0.6,
        sh_rest=torch.randn(n, k - 1, 3, generator=gen, dtype=F64) * rest_scale,
        opacity_logits=torch.randn(n, generator=gen, dtype=F64) + opacity_shift,
        log_scales=torch.randn(n, 3, generator=gen, dtype=F64) * 0.4 + log_scale,
        quaternions=torch.randn(n, 4, generator=gen, dtype=F64),
    )


def concat(*parts: Gaussians) -> Gaussians:
    names = parts[0].tensors().keys()
    return Gaussians(**{k: torch.cat([p.tensors()[k] for p in parts]) for k in names})


def placed(means, log_scales, opacity_logits, seed: int, sh_degree: int = 3) -> Gaussians:
    """Gaussians at given camera-frame positions (camera = identity pose)."""
    means = torch.as_tensor(means, dtype=F64)
    n = means.shape[0]
    g = random_gaussians(n, seed, sh_degree)
    return Gaussians(means, g.sh_dc, g.sh_rest,
                     torch.as_tensor(opacity_logits, dtype=F64).expand(n).clone(),
                     torch.as_tensor(log_scales, dtype=F64).expand(n, 3).clone(), g.quaternions)


IDENTITY = torch.eye(4, dtype=F64)


def scene_overlap():
    g = random_gaussians(40, seed=1)
    cam = Camera(37, 29, 34.0, 40.0, 20.7, 12.2, look_at([0.3, 0.2, -3.0], [0, 0, 0]))
    return g, cam, {}


def scene_aa_modifier_lower_degree():
    g = random_gaussians(35, seed=2)
    cam = Camera(40, 27, 44.0, 39.0, 18.1, 15.6, look_at([-0.4, 0.1, -3.2], [0, 0.1, 0]))
    return g, cam, {"antialiasing": True, "scaling_modifier": 1.4, "sh_degree": 1}


def scene_degree(degree: int, aa: bool):
    def make():
        g = random_gaussians(30, seed=10 + degree, sh_degree=degree)
        cam = Camera(33, 35, 38.0, 36.0, 16.0, 18.4, look_at([0.2, -0.3, -3.0], [0, 0, 0]))
        return g, cam, {"antialiasing": aa, "scaling_modifier": 0.8}
    return make


def scene_near_plane():
    # Identity pose: world = camera frame. Behind the camera, at and around the near plane
    # (z = 0.2), straddling it with large extents, plus a few ordinary ones behind them.
    means = [[0.0, 0.0, -1.0], [0.1, 0.0, -0.05], [0.0, 0.05, 0.0], [0.02, 0.0, 0.15],
             [0.0, 0.0, 0.2], [0.01, -0.01, 0.21], [-0.03, 0.02, 0.25], [0.05, 0.02, 0.3],
             [-0.04, -0.03, 0.19999], [0.0, 0.0, 0.35]]
    close = placed(means, -2.6, 0.5, seed=20)
    far = random_gaussians(12, seed=21, spread=0.4)
    far.means[:, 2] += 3.0
    return concat(close, far), Camera(34, 30, 30.0, 32.0, 17.5, 14.5, IDENTITY), {}


def scene_off_screen():
    # Far off-screen (clamped Jacobian, huge pixel positions, even float overflow range),
    # just off-screen with tails reaching in, and an off-centre principal point.
    means = [[40.0, 0.0, 2.0], [-1e3, 5.0, 3.0], [0.0, 1e6, 2.5], [1e30, 1e30, 4.0],
             [-1.2, 0.2, 2.0], [2.2, -0.3, 2.0], [0.1, 1.9, 2.5], [-0.2, -2.6, 2.5],
             [1.4, 1.1, 2.0]]
    edge = placed(means, -0.9, 1.5, seed=30)
    inner = random_gaussians(15, seed=31, spread=0.3)
    inner.means[:, 2] += 2.5
    return concat(edge, inner), Camera(36, 28, 30.0, 27.0, 8.0, 21.0, IDENTITY), {}


def scene_early_termination():
    g = random_gaussians(40, seed=40, spread=0.35, log_scale=-1.2, opacity_shift=4.0)
    cam = Camera(32, 32, 36.0, 36.0, 16.0, 16.0, look_at([0.0, 0.0, -3.0], [0, 0, 0]))
    return g, cam, {}


SCENES = {
    "overlap_offcentre_nonsquare": scene_overlap,
    "aa_modifier_lower_degree": scene_aa_modifier_lower_degree,
    "degree0": scene_degree(0, False),
    "degree1_aa": scene_degree(1, True),
    "degree2": scene_degree(2, False),
    "near_plane": scene_near_plane,
    "off_screen": scene_off_screen,
    "early_termination": scene_early_termination,
}


def with_grad(g: Gaussians) -> Gaussians:
    return Gaussians(**{k: v.detach().clone().requires_grad_(True) for k, v in g.tensors().items()})


def assert_matches(out, expected, atol=1e-10):
    torch.testing.assert_close(out.image.detach(), expected["image"], atol=atol, rtol=0)
    torch.testing.assert_close(out.alpha.detach(), expected["alpha"], atol=atol, rtol=0)
    torch.testing.assert_close(out.inv_depth.detach(), expected["inv_depth"], atol=atol, rtol=0)
    assert torch.equal(out.radii.long(), expected["radii"])


# ----- brute-force comparisons ----------------------------------------------------------------
@pytest.mark.parametrize("name", list(SCENES))
def test_matches_brute_force(name):
    g, cam, options = SCENES[name]()
    expected = brute_force(g, cam, **options)
    assert expected["alpha"].max() > 0.3, "scene should show something"

    with torch.no_grad():  # the blocked path
        out = render(g, cam, background=BACKGROUND, backend="reference", **options)
    assert out.radii.dtype == torch.int32 and out.image.shape == (3, cam.height, cam.width)
    assert_matches(out, expected)

    out = render(with_grad(g), cam, background=BACKGROUND, backend="reference", **options)
    assert out.image.requires_grad  # the checkpointed path
    assert_matches(out, expected)


def test_brute_force_scenes_cover_their_cases():
    """The special scenes really contain what they are named after."""
    g, cam, _ = scene_near_plane()
    depth = g.means[:, 2]
    radii = brute_force(g, cam)["radii"]
    assert (radii[depth <= 0.2] == 0).all() and (radii[depth > 0.2] > 0).any()
    assert ((depth > 0.2) & (depth < 0.4) & (radii > 20)).any()  # straddles the near plane

    g, cam, _ = scene_off_screen()
    radii = brute_force(g, cam)["radii"]
    assert (radii[:4] == 0).all() and (radii[4:9] > 0).all()  # tails of off-screen ones reach in
    centres = reference.project(g, cam, 3, 1.0, False).means2d[4:9]
    outside = (centres < -0.5) | (centres > torch.tensor([cam.width - 0.5, cam.height - 0.5], dtype=F64))
    assert outside.any(dim=1).all()


def test_early_termination():
    g, cam, options = scene_early_termination()
    expected = brute_force(g, cam, **options)
    assert expected["stopped"] > 50
    # The rule keeps T >= 1e-4: alpha never exceeds 1 - 1e-4, though it comes close.
    assert expected["alpha"].max() <= 1 - 1e-4
    assert expected["alpha"].max() > 0.999
    unstopped = brute_force(g, cam, early_stop=False, **options)
    assert unstopped["alpha"].max() > 1 - 1e-4
    assert (unstopped["image"] - expected["image"]).abs().max() > 1e-4

    with torch.no_grad():
        out = render(g, cam, background=BACKGROUND, backend="reference", **options)
    assert_matches(out, expected)
    assert out.alpha.max() <= 1 - 1e-4
    # With the rule switched off the reference follows the unstopped brute force.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(reference, "TRANSMITTANCE_MIN", 0.0)
        with torch.no_grad():
            out = render(g, cam, background=BACKGROUND, backend="reference", **options)
        assert_matches(out, unstopped)
        out = render(with_grad(g), cam, background=BACKGROUND, backend="reference", **options)
        assert_matches(out, unstopped)


def test_float32_close_to_brute_force():
    g, cam, options = scene_overlap()
    expected = brute_force(g, cam, **options)
    with torch.no_grad():
        out = render(g.to(dtype=torch.float32), cam, background=BACKGROUND, **options)
    assert out.image.dtype == torch.float32
    error = (out.image.double() - expected["image"]).abs()
    assert error.median() < 1e-6 and error.max() < 1e-3
    assert (out.radii.long() != expected["radii"]).sum() <= 1


def test_empty_and_fully_culled_scenes_keep_the_graph():
    cam = Camera(20, 18, 20.0, 20.0, 10.0, 9.0, IDENTITY)
    empty = with_grad(Gaussians.empty(3).to(dtype=F64))
    behind = with_grad(placed([[0.0, 0.0, -2.0], [0.0, 0.0, 0.1]], -1.0, 2.0, seed=5))
    for g in (empty, behind):
        out = render(g, cam, background=BACKGROUND)
        background = torch.tensor(BACKGROUND, dtype=F64)[:, None, None].expand(3, 18, 20)
        torch.testing.assert_close(out.image, background)
        assert (out.alpha == 0).all() and (out.inv_depth == 0).all() and (out.radii == 0).all()
        # A view that sees nothing must still backpropagate (zero gradients), as in training.
        (out.image.sum() + out.inv_depth.sum()).backward()
        assert (g.means.grad == 0).all() and (out.means2d.grad == 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_huge_gaussian_is_not_dropped(dtype):
    """A radius beyond int32 saturates instead of wrapping to <= 0 (which culled it).
    (sigma ~ 2e9 px: float32 still holds the 2D determinant, ~1e37.)"""
    g = placed([[0.0, 0.0, 2.0], [0.0, 0.0, 3.0]], 19.0, 2.0, seed=3, sh_degree=0)
    cam = Camera(20, 18, 20.0, 20.0, 10.0, 9.0, IDENTITY)
    with torch.no_grad():
        out = render(g.to(dtype=dtype), cam, background=BACKGROUND)
    assert (out.radii == 2 ** 30).all()
    expected = brute_force(g, cam)
    torch.testing.assert_close(out.image.double(), expected["image"], atol=1e-6, rtol=0)
    assert (out.alpha > 0.98).all()


# ----- analytic single Gaussian ---------------------------------------------------------------
@pytest.mark.parametrize("antialiasing", [False, True])
def test_single_gaussian_analytic(antialiasing):
    size, f, z, s, opacity = 33, 30.0, 2.0, 0.1, 0.8
    cam = Camera(size, size, f, f, size / 2, size / 2, IDENTITY)   # mean lands on pixel 16
    colour = torch.tensor([0.9, 0.3, 0.6], dtype=F64)
    g = Gaussians(torch.tensor([[0.0, 0.0, z]], dtype=F64),
                  ((colour - 0.5) / SH_C0).reshape(1, 1, 3), torch.zeros(1, 0, 3, dtype=F64),
                  torch.tensor([math.log(opacity / (1 - opacity))], dtype=F64),
                  torch.full((1, 3), math.log(s), dtype=F64), torch.tensor([[1.0, 0, 0, 0]], dtype=F64))
    bg = torch.tensor(BACKGROUND, dtype=F64)
    out = render(g, cam, background=bg, antialiasing=antialiasing)
    # On the optical axis J = diag(f/z, f/z): the projected variance is (f s / z)^2 + 0.3.
    variance0 = (f * s / z) ** 2
    variance = variance0 + 0.3
    o = opacity * (variance0 / variance if antialiasing else 1.0)  # sqrt(det ratio) = ratio of variances
    centre = 16
    for dx, dy in [(0, 0), (1, 0), (0, 2), (3, -1), (-4, 4), (6, 0)]:
        power = -0.5 * (dx * dx + dy * dy) / variance
        alpha = min(0.99, o * math.exp(power))
        expected = bg * (1 - alpha) + colour * alpha if alpha >= 1 / 255 else bg
        torch.testing.assert_close(out.image[:, centre + dy, centre + dx], expected, atol=1e-12, rtol=0)
        torch.testing.assert_close(out.alpha[centre + dy, centre + dx],
                                   torch.tensor(alpha if alpha >= 1 / 255 else 0.0, dtype=F64))
        torch.testing.assert_close(out.inv_depth[centre + dy, centre + dx],
                                   torch.tensor(alpha / z if alpha >= 1 / 255 else 0.0, dtype=F64))
    # Symmetric falloff about the centre pixel: flips and the transpose leave it unchanged.
    for image in (out.image, out.alpha[None]):
        torch.testing.assert_close(image, image.flip(-1), atol=1e-14, rtol=0)
        torch.testing.assert_close(image, image.flip(-2), atol=1e-14, rtol=0)
        torch.testing.assert_close(image, image.transpose(-1, -2), atol=1e-14, rtol=0)
    # Isotropic: mid^2 - det = 0, so the 0.1 floor binds and lambda_max = var + sqrt(0.1).
    assert out.radii.item() == math.ceil(3 * math.sqrt(variance + math.sqrt(0.1)))


def test_single_gaussian_radius_without_floor():
    """fx != fy makes the projection anisotropic; when (a - c)^2 / 4 >= 0.1 the eigenvalue
    floor does not bind and the radius is exactly ceil(3 sqrt(max variance))."""
    fx, fy, z, s = 30.0, 45.0, 2.0, 0.1
    cam = Camera(33, 33, fx, fy, 16.5, 16.5, IDENTITY)
    g = placed([[0.0, 0.0, z]], math.log(s), 0.0, seed=3, sh_degree=0)
    var_x, var_y = (fx * s / z) ** 2 + 0.3, (fy * s / z) ** 2 + 0.3
    assert (var_y - var_x) ** 2 / 4 > 0.1
    out = render(g, cam)
    assert out.radii.item() == math.ceil(3 * math.sqrt(var_y))
    o = 0.5
    for dx, dy in [(2, 0), (0, 2), (1, 1)]:
        alpha = o * math.exp(-0.5 * (dx * dx / var_x + dy * dy / var_y))
        assert out.alpha[16 + dy, 16 + dx].item() == pytest.approx(alpha, abs=1e-12)


# ----- gradients ------------------------------------------------------------------------------
def gradcheck_scene(seed: int) -> tuple[Gaussians, Camera]:
    """Six Gaussians over 2x2 tiles (20x18 px), every SH band, off-centre, fx != fy. The three
    big nearly opaque ones in front make some pixels stop early; the others show beside them."""
    g = random_gaussians(6, seed=seed, spread=0.25, log_scale=-1.6, opacity_shift=0.0, rest_scale=0.1)
    with torch.no_grad():
        # 0.989: below the 0.99 clamp, whose gradient passes straight through (as the
        # reference's) and so differs from finite differences where it clamps.
        g.opacity_logits[:3] = 4.5
        g.log_scales[:3] = -0.8
        g.means[:3] = torch.tensor([[0.5, 0.35, -0.6], [0.4, 0.4, -0.5], [0.45, 0.3, -0.4]], dtype=F64)
    cam = Camera(20, 18, 21.0, 19.0, 10.6, 8.2, look_at([0.1, 0.2, -2.5], [0, 0, 0]))
    return g, cam


def test_the_alpha_clamp_passes_its_gradient_straight_through(monkeypatch):
    """The reference's backward takes d alpha / d(o G) = 1 also where alpha = min(0.99, o G)
    clamps. One Gaussian over the background makes each pixel linear in its alpha
    (bg + alpha (c - bg)), so the gradients reaching the opacity, mean, scales and rotation
    through alpha are those of the same render without the clamp."""
    cam = Camera(24, 20, 30.0, 30.0, 11.7, 10.2, IDENTITY)
    g = placed([[0.05, -0.03, 2.0]], [math.log(0.4), math.log(0.3), math.log(0.35)], math.log(0.999 / 0.001),
               seed=5, sh_degree=0)
    through_alpha = ("opacity_logits", "means", "log_scales", "quaternions")
    weights = torch.rand(3, cam.height, cam.width, generator=torch.Generator().manual_seed(1), dtype=F64)

    def gradients():
        leaves = {name: t.detach().clone().requires_grad_(True) for name, t in g.tensors().items()}
        out = render(Gaussians(**leaves), cam, background=torch.tensor(BACKGROUND, dtype=F64))
        (out.image * weights).sum().backward()
        return out, {name: leaves[name].grad for name in through_alpha}

    clamped, straight = gradients()
    assert clamped.alpha.max().item() == pytest.approx(0.99, abs=1e-12)   # the centre is clamped
    assert int((clamped.alpha >= 0.99 - 1e-12).sum()) >= 2
    monkeypatch.setattr(reference, "ALPHA_MAX", 1.0)
    unclamped, exact = gradients()
    assert unclamped.alpha.max().item() > 0.99
    for name in through_alpha:
        assert straight[name].abs().max() > 0, name
        torch.testing.assert_close(straight[name], exact[name], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("antialiasing", [False, True])
def test_gradcheck_all_inputs(antialiasing):
    base, cam = gradcheck_scene(seed=7)
    inputs = [t.detach().clone().requires_grad_(True) for t in base.tensors().values()]
    background = torch.tensor([0.3, 0.1, 0.7], dtype=F64, requires_grad=True)

    # Every output pixel enters a few random linear functionals: one backward pass each
    # instead of one per pixel, while the numerical side still perturbs every input element.
    pixels = cam.width * cam.height
    mixing = torch.randn(6, 5 * pixels, generator=torch.Generator().manual_seed(2), dtype=F64)

    def function(*tensors):
        out = render(Gaussians(*tensors[:6]), cam, background=tensors[6], antialiasing=antialiasing)
        return mixing @ torch.cat([out.image.flatten(), out.alpha.flatten(), out.inv_depth.flatten()])

    expected = brute_force(base, cam, antialiasing=antialiasing)
    assert (expected["radii"] > 0).all()
    assert expected["stopped"] > 0   # some pixels stop early: the rule is in the gradient too
    assert torch.autograd.gradcheck(function, (*inputs, background), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_means2d_gradient():
    g, cam = gradcheck_scene(seed=11)
    # Two culled ones: behind the camera and far off-screen (camera frame, moved to world).
    culled = placed([[0.0, 0.0, -2.0], [60.0, 0.0, 1.0]], -2.0, 1.0, seed=4)
    camera_to_world = cam.camera_to_world
    culled.means = culled.means @ camera_to_world[:3, :3].T + camera_to_world[:3, 3]
    g = with_grad(concat(g, culled))
    bg = torch.tensor(BACKGROUND, dtype=F64)
    gen = torch.Generator().manual_seed(0)
    weights = [torch.rand(3, cam.height, cam.width, generator=gen, dtype=F64),
               torch.rand(cam.height, cam.width, generator=gen, dtype=F64),
               torch.rand(cam.height, cam.width, generator=gen, dtype=F64)]

    def loss_of(image, alpha, inv_depth):
        return (weights[0] * image).sum() + (weights[1] * alpha).sum() + (weights[2] * inv_depth).sum()

    # An explicit autograd call w.r.t. means2d, on its own graph (torch.autograd.grad also
    # fills the .grad of a tensor that retains it, so it must not share the graph below).
    other = render(g, cam, background=bg)
    explicit, = torch.autograd.grad(loss_of(other.image, other.alpha, other.inv_depth), other.means2d)

    out = render(g, cam, background=bg)
    with pytest.raises(RuntimeError, match="backward"):
        out.ndc_gradient(cam.width, cam.height)
    loss_of(out.image, out.alpha, out.inv_depth).backward()
    grad = out.means2d.grad
    assert grad.shape == (len(g), 2)
    torch.testing.assert_close(grad, explicit, atol=1e-12, rtol=0)

    # Finite differences in the 2D means, through the rasterization stage alone.
    projection = reference.project(g.detach(), cam, 3, 1.0, False)
    eps = 1e-6
    numeric = torch.zeros_like(grad)
    for i in range(len(g)):
        for k in range(2):
            values = []
            for sign in (1, -1):
                means2d = projection.means2d.clone()
                means2d[i, k] += sign * eps
                values.append(loss_of(*reference.rasterize(projection, means2d, cam, bg)).item())
            numeric[i, k] = (values[0] - values[1]) / (2 * eps)
    torch.testing.assert_close(grad, numeric, atol=1e-5, rtol=1e-4)

    visible = out.radii > 0
    assert visible[:6].all() and not visible[6:].any()
    assert (grad[visible].abs().sum(dim=1) > 1e-6).all()
    assert (grad[~visible] == 0).all()
    # The reference's densification statistic is in NDC units.
    torch.testing.assert_close(out.ndc_gradient(cam.width, cam.height),
                               grad * torch.tensor([cam.width / 2, cam.height / 2], dtype=F64))


# ----- batches --------------------------------------------------------------------------------
def test_batch_equals_separate_renders():
    g = random_gaussians(30, seed=50)
    poses = [look_at([0.3, 0.2, -3.0], [0, 0, 0]), look_at([-2.5, 0.5, -1.5], [0, 0, 0]),
             look_at([0.0, -3.0, -0.5], [0, 0.1, 0], up=(0, 0, 1))]
    cams = [Camera(37, 29, 34.0, 40.0, 20.7, 12.2, poses[0]),
            Camera(37, 29, 30.0, 30.0, 18.5, 14.5, poses[1]),
            Camera(37, 29, 40.0, 36.0, 15.0, 16.0, poses[2])]
    options = {"background": BACKGROUND, "antialiasing": True, "sh_degree": 2}
    with torch.no_grad():
        batch = render(g, cams, **options)
    assert batch.image.shape == (3, 3, 29, 37) and batch.radii.shape == (3, len(g))

    gb = with_grad(g)
    batch_grad = render(gb, cams, **options)
    (batch_grad.image.square().sum() + batch_grad.inv_depth.sum()).backward()
    assert batch_grad.means2d.grad.shape == (3, len(g), 2)
    total = {k: torch.zeros_like(v) for k, v in g.tensors().items()}
    for b, cam in enumerate(cams):
        single = render(g, cam, **options)
        for field in ("image", "alpha", "inv_depth"):
            torch.testing.assert_close(getattr(batch, field)[b], getattr(single, field), atol=1e-12, rtol=0)
            torch.testing.assert_close(getattr(batch_grad, field)[b].detach(), getattr(single, field),
                                       atol=1e-12, rtol=0)
        assert torch.equal(batch.radii[b], single.radii)
        gs = with_grad(g)
        out = render(gs, cam, **options)
        (out.image.square().sum() + out.inv_depth.sum()).backward()
        torch.testing.assert_close(batch_grad.means2d.grad[b], out.means2d.grad, atol=1e-10, rtol=1e-9)
        for k, v in gs.tensors().items():
            total[k] += v.grad
    for k, v in gb.tensors().items():
        torch.testing.assert_close(v.grad, total[k], atol=1e-10, rtol=1e-9)


# ----- chunking and pruning invariance --------------------------------------------------------
def render_and_grads(g: Gaussians, cam: Camera, **options):
    with torch.no_grad():
        plain = render(g, cam, background=BACKGROUND, **options)
    gg = with_grad(g)
    out = render(gg, cam, background=BACKGROUND, **options)
    gen = torch.Generator().manual_seed(1)
    loss = ((torch.rand(out.image.shape, generator=gen, dtype=F64) * out.image).sum()
            + out.alpha.square().sum() + out.inv_depth.sum())
    loss.backward()
    grads = {k: v.grad for k, v in gg.tensors().items()}
    grads["means2d"] = out.means2d.grad
    return plain, out, grads


def assert_same_render(a, b, atol=1e-12):
    plain_a, out_a, grads_a = a
    plain_b, out_b, grads_b = b
    for field in ("image", "alpha", "inv_depth"):
        for x, y in ((plain_a, plain_b), (out_a, out_b), (plain_a, out_b)):
            torch.testing.assert_close(getattr(x, field).detach(), getattr(y, field).detach(),
                                       atol=atol, rtol=0)
    assert torch.equal(plain_a.radii, plain_b.radii)
    for k in grads_a:
        torch.testing.assert_close(grads_a[k], grads_b[k], atol=atol, rtol=1e-10)


def chunking_scene():
    """Small Gaussians in front of an opaque backdrop that ends every pixel of the centre
    tile, with more Gaussians hidden behind it (so the blocked pass can stop early)."""
    front = random_gaussians(60, seed=60, spread=0.5, log_scale=-1.8)
    offsets = torch.randn(14, 3, generator=torch.Generator().manual_seed(62), dtype=F64) * 0.1
    backdrop = placed(offsets + torch.tensor([0.0, 0.0, 0.8], dtype=F64), 0.3, 6.0, seed=62)
    hidden = random_gaussians(25, seed=61, spread=0.3, log_scale=-1.3, opacity_shift=2.0)
    hidden.means[:, 2] += 1.5
    cam = Camera(45, 38, 44.0, 42.0, 23.0, 18.5, look_at([0.1, -0.2, -3.0], [0, 0, 0]))
    return concat(front, backdrop, hidden), cam


@pytest.mark.parametrize("chunk_elements,depth_block", [(1, 1), (3000, 3)])
def test_chunking_invariance(monkeypatch, chunk_elements, depth_block):
    g, cam = chunking_scene()
    default = render_and_grads(g, cam, antialiasing=True)
    monkeypatch.setattr(reference, "CHUNK_ELEMENTS", chunk_elements)
    monkeypatch.setattr(reference, "DEPTH_BLOCK", depth_block)
    assert_same_render(default, render_and_grads(g, cam, antialiasing=True))

    # The blocked pass really stops early: it evaluates fewer (tile, pair) slots than exist.
    evaluated = []
    alpha = reference._alpha

    def counting_alpha(features, present, *args):
        evaluated.append(int(present.sum()))
        return alpha(features, present, *args)

    monkeypatch.setattr(reference, "_alpha", counting_alpha)
    with torch.no_grad():
        render(g, cam, antialiasing=True)
    projection = reference.project(g, cam, 3, 1.0, True)
    pairs = reference.bin_tiles(projection, (cam.width + 15) // 16)[0].numel()
    assert len(evaluated) > 3 and sum(evaluated) < pairs


def test_pair_pruning_changes_nothing(monkeypatch):
    g, cam = chunking_scene()
    projection = reference.project(g, cam, 3, 1.0, False)
    tiles_x = (cam.width + 15) // 16
    pruned = reference.bin_tiles(projection, tiles_x)[0].numel()
    pruned_result = render_and_grads(g, cam)
    monkeypatch.setattr(reference, "_min_quadratic_over_box",
                        lambda conics, low, high: torch.zeros_like(conics[:, 0]))
    unpruned = reference.bin_tiles(projection, tiles_x)[0].numel()
    assert pruned < unpruned  # pruning really drops pairs here
    assert_same_render(pruned_result, render_and_grads(g, cam))


def test_min_quadratic_over_box_matches_grid_search():
    gen = torch.Generator().manual_seed(5)
    count = 300
    # Random symmetric positive-definite conics (a, b, c), some very elongated.
    eig = torch.exp(torch.rand(count, 2, generator=gen, dtype=F64) * 8 - 6)
    angle = torch.rand(count, generator=gen, dtype=F64) * math.pi
    cos, sin = torch.cos(angle), torch.sin(angle)
    a = eig[:, 0] * cos ** 2 + eig[:, 1] * sin ** 2
    c = eig[:, 0] * sin ** 2 + eig[:, 1] * cos ** 2
    b = (eig[:, 0] - eig[:, 1]) * cos * sin
    conics = torch.stack([a, b, c], dim=-1)
    low = torch.rand(count, 2, generator=gen, dtype=F64) * 60 - 40
    high = low + torch.rand(count, 2, generator=gen, dtype=F64) * 30
    high[:20] = low[:20] + 15.0  # tile-sized boxes
    low[:10], high[:10] = -low[:10].abs(), high[:10].abs()  # boxes holding the origin
    result = reference._min_quadratic_over_box(conics, low, high)

    steps = torch.linspace(0, 1, 801, dtype=F64)
    for i in range(count):
        xs = low[i, 0] + (high[i, 0] - low[i, 0]) * steps
        ys = low[i, 1] + (high[i, 1] - low[i, 1]) * steps
        qx, qy = torch.meshgrid(xs, ys, indexing="ij")
        q = a[i] * qx * qx + 2 * b[i] * qx * qy + c[i] * qy * qy
        grid_min = q.min().item()
        # Never above the true minimum (pruning must be conservative), and close to the grid's.
        assert result[i].item() <= grid_min * (1 + 1e-12) + 1e-12
        spacing = ((high[i] - low[i]) / 800).norm().item()
        assert grid_min - result[i].item() <= 1e-6 + 2 * spacing * eig[i].max().item() * (
            low[i].abs().max().item() + high[i].abs().max().item() + spacing)
    assert (result[:10] == 0).all()


# ----- memory ---------------------------------------------------------------------------------
MEMORY_SCRIPT = textwrap.dedent("""
    import math, resource, torch
    from rasterizer import Camera, Gaussians, look_at, render
    torch.set_num_threads(1)  # same memory; on a busy 2-core box 2 threads were 3x slower
    n, size = 100_000, 400
    gen = torch.Generator().manual_seed(0)
    scale = 0.03 * (1e4 / n) ** (1 / 3)
    tensors = [torch.randn(n, 3, generator=gen) * 0.8, torch.randn(n, 1, 3, generator=gen) * 0.5,
               torch.randn(n, 15, 3, generator=gen) * 0.05, torch.randn(n, generator=gen),
               math.log(scale) + 0.3 * torch.randn(n, 3, generator=gen), torch.randn(n, 4, generator=gen)]
    g = Gaussians(*[t.requires_grad_(True) for t in tensors])
    cam = Camera.from_fov(size, size, math.radians(50), None, look_at([0, 0, -4], [0, 0, 0]))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = render(g, cam, backend="reference")
    (out.image.sum() + out.inv_depth.sum()).backward()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert g.means.grad.abs().sum() > 0 and out.alpha.mean() > 0.5
    print((after - before) / 1024.0)  # ru_maxrss is in KiB on Linux
""")


def test_memory_400px_100k_gaussians():
    """Forward + backward at 400x400 with 100k Gaussians: about 1 GiB (10 s, so not marked slow)."""
    result = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    growth_mib = float(result.stdout.strip().splitlines()[-1])
    assert growth_mib < 4096, f"peak RSS grew by {growth_mib:.0f} MiB"


# ----- errors ---------------------------------------------------------------------------------
def test_errors():
    g = random_gaussians(4, seed=1, sh_degree=2)
    cam = Camera(20, 18, 20.0, 20.0, 10.0, 9.0, look_at([0, 0, -3.0], [0, 0, 0]))
    with pytest.raises(ValueError, match="background must be 3 values"):
        render(g, cam, background=(0.0, 0.0))
    with pytest.raises(ValueError, match="background must be 3 values"):
        render(g, cam, background=torch.zeros(1, 3))
    with pytest.raises(ValueError, match="sh_degree 3 is outside 0..2"):
        render(g, cam, sh_degree=3)
    with pytest.raises(ValueError, match="sh_degree -1"):
        render(g, cam, sh_degree=-1)
    with pytest.raises(ValueError, match="unknown backend 'vulkan'"):
        render(g, cam, backend="vulkan")
    with pytest.raises(ValueError, match="share one image size"):
        render(g, [cam, cam.resized(10, 9)])
    with pytest.raises(ValueError, match="at least one camera"):
        render(g, [])


@pytest.mark.skipif("cuda" in available_backends(), reason="the CUDA backend is available here")
def test_cuda_backend_unavailable():
    g = random_gaussians(4, seed=1)
    cam = Camera(20, 18, 20.0, 20.0, 10.0, 9.0, look_at([0, 0, -3.0], [0, 0, 0]))
    with pytest.raises(RuntimeError, match="CUDA backend is not available"):
        render(g, cam, backend="cuda")
    # "auto" falls back to the reference on CPU tensors.
    with torch.no_grad():
        torch.testing.assert_close(render(g, cam, backend="auto").image,
                                   render(g, cam, backend="reference").image)
