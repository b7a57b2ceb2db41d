"""The viewer's other render modes (viewer/backends/gl_modes.py, shaders/ellipsoid.*, points.*, depth.frag)
under Xvfb + Mesa llvmpipe, drawn into a float framebuffer; and switching modes through ViewerApp.

Skipped cleanly when Xvfb is not installed or no GL 4.3 core context can be created.
"""

import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from rasterizer import Camera, Gaussians, PointCloud, look_at, render, write_ply, write_point_cloud
from rasterizer.model_folder import point_cloud_path, write_cameras_json, write_cfg_args

WIDTH, HEIGHT = 128, 96
C0 = 0.28209479177387814

# Four well-separated Gaussians: red, green, blue (opaque, at increasing depth) and a faint white one.
MEANS = [(-0.9, -0.4, 0.0), (0.0, 0.5, 0.8), (0.9, -0.3, 1.6), (0.2, -0.5, -0.2)]
COLOURS = [(0.9, 0.1, 0.1), (0.1, 0.9, 0.1), (0.1, 0.1, 0.9), (0.9, 0.9, 0.9)]
OPACITIES = [0.95, 0.95, 0.95, 0.1]
FAINT = 3


def scene() -> Gaussians:
    n = len(MEANS)
    colours = torch.tensor(COLOURS)
    opacities = torch.tensor(OPACITIES)
    angle = 0.4   # a rotated, anisotropic ellipsoid each
    quaternion = torch.tensor([math.cos(angle / 2), 0.0, 0.0, math.sin(angle / 2)])
    return Gaussians(
        means=torch.tensor(MEANS),
        sh_dc=((colours - 0.5) / C0).reshape(n, 1, 3),
        sh_rest=torch.zeros(n, 0, 3),
        opacity_logits=torch.log(opacities / (1 - opacities)),
        log_scales=torch.log(torch.tensor([[0.12, 0.08, 0.1]])).repeat(n, 1),
        quaternions=quaternion.repeat(n, 1),
    )


def camera(centred: bool = False) -> Camera:
    """Off-centre principal point, different focal lengths; ``centred``: what ViewerState
    renders from this pose (square pixels, principal point at the image centre)."""
    pose = look_at((0.2, -0.3, -4.0), (0.0, 0.0, 0.5), up=(0.0, -1.0, 0.0))
    if centred:
        return Camera(WIDTH, HEIGHT, fx=104.0, fy=104.0, cx=WIDTH / 2, cy=HEIGHT / 2, world_to_camera=pose)
    return Camera(WIDTH, HEIGHT, fx=110.0, fy=104.0, cx=70.3, cy=43.1, world_to_camera=pose)


def project(cam: Camera, points) -> list[tuple[int, int, float]]:
    """(column, row, view z) of each world point, in our Camera's pixel convention."""
    pose = cam.world_to_camera
    out = []
    for p in torch.tensor(points, dtype=torch.float64):
        x, y, z = (pose[:3, :3] @ p + pose[:3, 3]).tolist()
        out.append((int(cam.fx * x / z + cam.cx), int(cam.fy * y / z + cam.cy), z))
    return out


def draw(renderer, cam: Camera, **kwargs) -> torch.Tensor:
    from viewer.window.gl_context import draw_to_float_image

    return draw_to_float_image(renderer, cam, **kwargs)


def test_ellipsoids_are_opaque_blobs_in_the_gaussians_colours(gl_context):
    from viewer.backends.gl_modes import EllipsoidRenderer
    from viewer.backends.gl_splats import SplatRenderer

    gaussians, cam = scene(), camera()
    splats = SplatRenderer(gaussians)
    ellipsoids = EllipsoidRenderer(splats, gaussians)
    image = draw(ellipsoids, cam, background=(0.0, 0.0, 0.0))
    splat_image = draw(splats, cam, background=(0.0, 0.0, 0.0))
    covered = image.abs().sum(dim=0) > 1e-6
    opaque = image.max(dim=0).values > 0.2     # the faint ellipsoid stays below this
    for index, (u, v, _) in enumerate(project(cam, MEANS)):
        pixel = image[:, v, u]
        expected = 0.5 + 0.2 * gaussians.sh_dc[index, 0]   # SIBR's colour approximation
        if index == FAINT:
            # Additive pass: two surfaces (front and back faces) x alpha 0.05 at most.
            assert 0.0 < float(pixel.max()) < 0.15, pixel
            continue
        assert int(pixel.argmax()) == int(expected.argmax()), (index, pixel)
        # Shading max(0.4, dot(-dir, n)) * colour: near the centre the normal faces the camera.
        assert torch.allclose(pixel, expected, atol=0.12), (index, pixel, expected)
        # Opaque blob, centred where the splat is.
        rows, cols = torch.nonzero(opaque[max(v - 12, 0):v + 13, max(u - 12, 0):u + 13], as_tuple=True)
        centroid = (float(cols.float().mean()) + max(u - 12, 0), float(rows.float().mean()) + max(v - 12, 0))
        assert abs(centroid[0] - u) < 2.0 and abs(centroid[1] - v) < 2.0, (index, centroid, (u, v))
        assert float(splat_image[:, v, u].sum()) > 0.3
    # Far from the Gaussians stays background.
    assert float(image[:, 0:6, 0:6].abs().max()) == 0.0
    # The ellipsoids cover their 2-sigma footprints, not the whole image.
    assert 0.02 < float(covered.float().mean()) < 0.5
    ellipsoids.release()
    splats.release()


def test_ellipsoids_respect_depth(gl_context):
    """Two opaque ellipsoids on one line of sight: the nearer one wins whatever the draw order."""
    from viewer.backends.gl_modes import EllipsoidRenderer
    from viewer.backends.gl_splats import SplatRenderer

    cam = camera()
    centre = cam.center
    forward = cam.camera_to_world[:3, 2]
    for near_first in (True, False):
        depths = (3.0, 4.5) if near_first else (4.5, 3.0)
        means = torch.stack([centre + d * forward for d in depths]).float()
        colours = torch.tensor([(0.9, 0.1, 0.1), (0.1, 0.1, 0.9)])
        g = Gaussians(means, ((colours - 0.5) / C0).reshape(2, 1, 3), torch.zeros(2, 0, 3),
                      torch.full((2,), 3.0), torch.full((2, 3), math.log(0.2)),
                      torch.tensor([[1.0, 0, 0, 0]]).repeat(2, 1))
        splats = SplatRenderer(g)
        ellipsoids = EllipsoidRenderer(splats, g)
        image = draw(ellipsoids, cam)
        u, v, _ = project(cam, means[:1].tolist())[0]
        nearer = 0 if near_first else 1
        assert int(image[:, v, u].argmax()) == int(colours[nearer].argmax())
        ellipsoids.release()
        splats.release()


def test_initial_points_draw_at_projected_positions(gl_context):
    from viewer.backends.gl_modes import PointsRenderer

    cam = camera()
    background = (0.2, 0.3, 0.5)
    xyz = np.array([(-1.0, -0.6, 0.5), (0.8, 0.4, 1.0), (0.0, 0.0, 2.0)], dtype=np.float32)
    rgb = np.array([(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (1.0, 1.0, 0.0)], dtype=np.float32)
    renderer = PointsRenderer(scene(), PointCloud(xyz, rgb))
    image = draw(renderer, cam, background=background)
    for (u, v, _), colour in zip(project(cam, xyz.tolist()), rgb):
        assert torch.allclose(image[:, v, u], torch.from_numpy(colour), atol=1e-6), (u, v, image[:, v, u])
    bg = torch.tensor(background)[:, None, None]
    painted = (image - bg).abs().sum(dim=0) > 1e-6
    assert 3 <= int(painted.sum()) <= 3 * 9 + 3    # 3x3-pixel points, nothing else
    renderer.release()

    # Without input.ply: the Gaussian centres in their DC colours.
    renderer = PointsRenderer(scene())
    image = draw(renderer, cam, background=background)
    for (u, v, _), colour in zip(project(cam, MEANS), COLOURS):
        assert torch.allclose(image[:, v, u], torch.tensor(colour), atol=1e-5)
    renderer.release()


def test_depth_colours_near_and_far_differently(gl_context):
    from viewer.backends.gl_modes import DepthRenderer
    from viewer.backends.gl_splats import SplatRenderer

    gaussians, cam = scene(), camera()
    background = (0.2, 0.3, 0.5)
    splats = SplatRenderer(gaussians)
    renderer = DepthRenderer(splats)
    image = draw(renderer, cam, background=background)
    (u0, v0, z0), _, (u2, v2, z2), _ = project(cam, MEANS)
    assert z0 < z2
    near, far = image[:, v0, u0], image[:, v2, u2]
    assert float((near - far).abs().max()) > 0.3, (near, far)
    assert float(near[0]) > float(near[2]) and float(far[2]) > float(far[0])   # turbo: near warm, far cool
    assert torch.allclose(image[:, 0:6, 0:6], torch.tensor(background)[:, None, None].expand(3, 6, 6))
    # Coverage follows the reference rasterizer's alpha.
    with torch.no_grad():
        reference = render(gaussians, cam, background=(0.0, 0.0, 0.0), backend="reference")
    bg = torch.tensor(background)[:, None, None]
    drawn = (image - bg).abs().sum(dim=0) > 1e-3
    assert bool(drawn[reference.alpha > 0.3].all())
    # (the GL path's 3-sigma squares reach a few pixels the reference's tiles leave out)
    assert float((image - bg).abs().amax(dim=0)[reference.alpha < 1e-4].max()) < 0.01
    # The splat renderer is back to colour afterwards.
    colour = draw(splats, cam, background=(0.0, 0.0, 0.0))
    assert int(colour[:, v0, u0].argmax()) == 0
    renderer.release()
    splats.release()


# ----- switching modes in the application (child process: GLFW state stays out of pytest) -----
@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("modes") / "model"
    gaussians = scene()
    write_ply(point_cloud_path(folder, 10), gaussians)
    xyz = np.array([(-0.5, 0.2, 0.3), (0.6, 0.1, 0.9)], dtype=np.float32)
    write_point_cloud(folder / "input.ply", PointCloud(xyz, np.array([(1, 1, 0), (0, 1, 1)], np.float32)))
    cam = camera(centred=True)
    write_cameras_json(folder, [], [cam])
    write_cfg_args(folder, dict(sh_degree=0, source_path="/nonexistent", model_path=str(folder),
                                images="images", depths="", resolution=-1, white_background=False,
                                train_test_exp=False, data_device="cuda", eval=False))
    return folder, cam, xyz


SWITCH_SCRIPT = textwrap.dedent("""
    import sys
    from viewer.app import ViewerApp
    from viewer.scene_source import load_viewer_input
    from viewer.state import RENDER_MODES, ViewerState

    folder, out = sys.argv[1], sys.argv[2]
    viewer_input = load_viewer_input(folder)
    state = ViewerState.from_input_camera(viewer_input.cameras, 0, background=viewer_input.background,
                                          max_sh_degree=0, sh_degree=0)
    app = ViewerApp(viewer_input, state, visible=False)
    try:
        for mode in RENDER_MODES + ("splats",):
            state.update(render_mode=mode)
            app.draw()
            app.screenshot(f"{out}/{mode}.png")
        print(sorted(app.mode_renderers))
    finally:
        app.close()
""")


def test_viewer_app_switches_render_modes(model, xvfb_display, tmp_path):
    folder, cam, xyz = model
    env = dict(os.environ, DISPLAY=xvfb_display)
    result = subprocess.run([sys.executable, "-c", SWITCH_SCRIPT, str(folder), str(tmp_path)], env=env,
                            capture_output=True, text=True, timeout=120)
    if result.returncode != 0 and "OpenGL 4.3" in result.stderr:
        pytest.skip("no GL 4.3 context here")
    assert result.returncode == 0, result.stderr
    assert "['depth', 'ellipsoids', 'initial_points']" in result.stdout
    shots = {mode: np.asarray(Image.open(tmp_path / f"{mode}.png").convert("RGB")).astype(int)
             for mode in ("splats", "ellipsoids", "initial_points", "depth")}
    for mode, shot in shots.items():
        assert shot.shape == (HEIGHT, WIDTH, 3), mode
        assert (shot != 0).any(axis=2).mean() > 0.0005, mode
    for a in shots:
        for b in shots:
            if a < b:
                assert np.abs(shots[a] - shots[b]).sum() > 0, (a, b)
    # Initial points come from the model folder's input.ply, not the Gaussian centres.
    points = shots["initial_points"]
    for (u, v, _), colour in zip(project(cam, xyz.tolist()), [(255, 255, 0), (0, 255, 255)]):
        assert tuple(points[v, u]) == colour
    u, v, _ = project(cam, MEANS[:1])[0]
    assert tuple(points[v, u]) == (0, 0, 0)


def test_cli_render_mode_flag(model, xvfb_display, tmp_path):
    folder, _, _ = model
    out = tmp_path / "ellipsoids.png"
    env = dict(os.environ, DISPLAY=xvfb_display)
    result = subprocess.run([sys.executable, "-m", "viewer.cli", "-m", str(folder), "--render-mode", "ellipsoids",
                             "--frames", "2", "--screenshot", str(out)], env=env,
                            capture_output=True, text=True, timeout=120)
    if result.returncode != 0 and "OpenGL 4.3" in result.stderr:
        pytest.skip("no GL 4.3 context here")
    assert result.returncode == 0, result.stderr
    shot = np.asarray(Image.open(out).convert("RGB"))
    u, v, _ = project(camera(centred=True), MEANS[:1])[0]
    assert shot[v, u, 0] > 150 and shot[v, u, 1] < 100   # the red ellipsoid
