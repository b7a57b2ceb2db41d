"""The reference backend: pure PyTorch, differentiable through autograd, any device.

It reproduces graphdeco-inria's ``diff-gaussian-rasterization`` (branch ``dr_aa``) numerics,
with one deliberate improvement: the principal point (cx, cy) is honoured.

Stages, per camera:

1. ``project``: per Gaussian (vectorised) view transform, near cull (view z <= 0.2), 3D
   covariance, EWA projection with the 1.3 * tan(fov/2) clamp, +0.3 px^2 dilation (and the
   antialiasing opacity factor), conic, 3-sigma radius, 16x16 tile rectangle, SH colour.
2. ``bin_tiles``: one (tile, Gaussian) pair per covered tile, ordered by tile then view depth
   (ties in Gaussian index order, as the reference's stable radix sort gives).
3. ``find_live_pairs`` (no grad): evaluates every pair and keeps those that reach a pixel
   which has not terminated yet. Dropping the others changes no pixel and no gradient.
4. ``composite``: front-to-back alpha blending of the live pairs over chunks of tiles,
   checkpointed so that autograd memory stays bounded by the chunk size.

Blending rule per pixel (reference): power = -0.5 (a dx^2 + c dy^2) - b dx dy, skipped if
> 0; alpha = min(0.99, o e^power), skipped if < 1/255; the pixel stops *before* a Gaussian
that would bring T (1 - alpha) below 1e-4; colour C + T * background.

Gradients are autograd's, with the reference's one exception: the 0.99 clamp of alpha passes
its gradient straight through (d alpha / d(o e^power) = 1 above 0.99 too), as the reference's
backward does. Elsewhere a clamp has zero gradient where it clamps (the SH colour at 0, the
frustum clamp of the Jacobian, the antialiasing factor's floor), as there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint

from .camera import Camera
from .gaussians import Gaussians
from .render import RenderOutput
from .sh import sh_to_rgb

__all__ = ["render_reference", "project", "Projection", "TILE_SIZE", "NEAR_PLANE"]

TILE_SIZE = 16
NEAR_PLANE = 0.2          # view-space z at or below which a Gaussian is culled
DILATION = 0.3            # px^2 added to the 2D covariance (low-pass filter)
FRUSTUM_GUARD = 0.3       # the "1.3" of the reference's tan(fov/2) clamp
ALPHA_MAX = 0.99
ALPHA_MIN = 1.0 / 255.0
TRANSMITTANCE_MIN = 1e-4
AA_DET_RATIO_MIN = 2.5e-5
PIXELS_PER_TILE = TILE_SIZE * TILE_SIZE
# Elements (pairs x pixels) evaluated at once; bounds memory of the blending stage.
CHUNK_ELEMENTS = 1 << 22
DEPTH_BLOCK = 32          # pairs per step of the no-grad pass (it stops when a tile is done)

# Per-Gaussian features gathered for blending, in this column order.
_MX, _MY, _CA, _CB, _CC, _OPACITY, _R, _G, _B, _INV_DEPTH = range(10)


@dataclass
class Projection:
    """Screen-space Gaussians for one camera ([N] or [N, k] tensors, all N Gaussians).

    ``means2d`` is in pixels (pixel (i, j) centred at (i, j)); ``conics`` holds the inverse 2D
    covariance (a, b, c) for a dx^2 + 2 b dx dy + c dy^2; ``radii`` is 0 for culled Gaussians;
    ``tile_min``/``tile_max`` is the half-open tile rectangle [min, max).
    """

    means2d: torch.Tensor
    depths: torch.Tensor
    conics: torch.Tensor
    opacities: torch.Tensor
    colors: torch.Tensor
    radii: torch.Tensor
    tile_min: torch.Tensor
    tile_max: torch.Tensor


def quaternion_to_matrix(quaternions: torch.Tensor) -> torch.Tensor:
    """Rotation matrices [N, 3, 3] from unit quaternions [N, 4] ordered (w, x, y, z)."""
    w, x, y, z = quaternions.unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]
    return torch.stack(rows, dim=-1).reshape(*quaternions.shape[:-1], 3, 3)


def covariance_3d(scales: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """World covariances [N, 3, 3] = R S S^T R^T from scales [N, 3] and unit quaternions."""
    m = quaternion_to_matrix(rotations) * scales[:, None, :]
    return m @ m.transpose(1, 2)


def _camera_tensors(camera: Camera, like: torch.Tensor):
    matrix = camera.world_to_camera.to(device=like.device, dtype=like.dtype)
    center = camera.center.to(device=like.device, dtype=like.dtype)
    return matrix[:3, :3], matrix[:3, 3], center


def project(gaussians: Gaussians, camera: Camera, sh_degree: int, scaling_modifier: float,
            antialiasing: bool) -> Projection:
    """Stage 1: project every Gaussian into ``camera`` (differentiable where it matters)."""
    means = gaussians.means
    rotation, translation, center = _camera_tensors(camera, means)
    view = means @ rotation.T + translation
    depth = view[:, 2]
    in_front = depth > NEAR_PLANE
    # Culled Gaussians get a harmless depth so no inf/NaN reaches autograd through them.
    z = torch.where(in_front, depth, torch.ones_like(depth))
    x, y = view[:, 0], view[:, 1]
    fx, fy, cx, cy = camera.fx, camera.fy, camera.cx, camera.cy
    means2d = torch.stack([fx * x / z + cx - 0.5, fy * y / z + cy - 0.5], dim=-1)

    # EWA Jacobian with the reference's frustum clamp. The clamp bounds are measured from the
    # principal point, so an off-centre camera clamps asymmetrically; a centred one gets
    # exactly the reference's +-1.3 tan(fov/2).
    guard_x = FRUSTUM_GUARD * camera.width / (2.0 * fx)
    guard_y = FRUSTUM_GUARD * camera.height / (2.0 * fy)
    tx = torch.clamp(x / z, -(cx / fx + guard_x), (camera.width - cx) / fx + guard_x) * z
    ty = torch.clamp(y / z, -(cy / fy + guard_y), (camera.height - cy) / fy + guard_y) * z
    zeros = torch.zeros_like(z)
    jacobian = torch.stack([
        torch.stack([fx / z, zeros, -fx * tx / (z * z)], dim=-1),
        torch.stack([zeros, fy / z, -fy * ty / (z * z)], dim=-1),
    ], dim=1)                                                         # [N, 2, 3]
    cov_world = covariance_3d(gaussians.scales * scaling_modifier, gaussians.rotations)
    transform = jacobian @ rotation                                   # [N, 2, 3]
    cov2d = transform @ cov_world @ transform.transpose(1, 2)         # [N, 2, 2]
    a = cov2d[:, 0, 0] + DILATION
    b = cov2d[:, 0, 1]
    c = cov2d[:, 1, 1] + DILATION
    det = a * c - b * b
    opacities = gaussians.opacities
    if antialiasing:
        det_undilated = (a - DILATION) * (c - DILATION) - b * b
        ratio = torch.clamp_min(det_undilated / torch.where(det != 0, det, torch.ones_like(det)),
                                AA_DET_RATIO_MIN)
        opacities = opacities * torch.sqrt(ratio)
    valid = in_front & (det != 0)
    safe_det = torch.where(valid, det, torch.ones_like(det))
    conics = torch.stack([c / safe_det, -b / safe_det, a / safe_det], dim=-1)

    with torch.no_grad():
        mid = 0.5 * (a + c)
        lambda_max = mid + torch.sqrt(torch.clamp_min(mid * mid - det, 0.1))
        radii = torch.ceil(3.0 * torch.sqrt(torch.clamp_min(lambda_max, 0.0)))
        radii = torch.where(valid, radii, torch.zeros_like(radii))
        tiles_x = (camera.width + TILE_SIZE - 1) // TILE_SIZE
        tiles_y = (camera.height + TILE_SIZE - 1) // TILE_SIZE
        upper = torch.tensor([tiles_x, tiles_y], device=means.device, dtype=means.dtype)
        centre = means2d.detach()
        # Clamp in floating point before the integer cast: far-off centres may be huge.
        tile_min = torch.minimum(torch.clamp_min(torch.floor((centre - radii[:, None]) / TILE_SIZE), 0), upper).long()
        tile_max = torch.minimum(torch.clamp_min(
            torch.floor((centre + radii[:, None] + TILE_SIZE - 1) / TILE_SIZE), 0), upper).long()
        area = (tile_max - tile_min).prod(dim=-1)
        # Saturate before the int32 cast (as CUDA's float-to-int conversion does): an
        # overflowing cast would make a huge screen-filling Gaussian's radius <= 0 and drop it.
        radii = torch.where(area > 0, torch.clamp_max(radii, 2.0 ** 30), torch.zeros_like(radii))
        radii = radii.to(torch.int32)

    directions = torch.nn.functional.normalize(means - center, dim=-1)
    colors = sh_to_rgb(gaussians.sh, directions, sh_degree)
    return Projection(means2d, z, conics, opacities, colors, radii, tile_min, tile_max)


def _min_quadratic_over_box(conics: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Minimum of q(d) = a dx^2 + 2 b dx dy + c dy^2 over the box low <= d <= high ([P, 2] each).

    q is convex, so the minimum is 0 when the box holds the origin and otherwise lies on one
    of the four edges, where it is a clamped 1-D quadratic.
    """
    a, b, c = conics.unbind(-1)

    def edge(fixed, lo, hi, coef_fixed, coef_free):
        # q along an edge where one coordinate is fixed; the other is free in [lo, hi].
        free = torch.clamp(-b * fixed / coef_free, lo, hi)
        return coef_fixed * fixed * fixed + 2 * b * fixed * free + coef_free * free * free

    candidates = torch.stack([
        edge(low[:, 0], low[:, 1], high[:, 1], a, c), edge(high[:, 0], low[:, 1], high[:, 1], a, c),
        edge(low[:, 1], low[:, 0], high[:, 0], c, a), edge(high[:, 1], low[:, 0], high[:, 0], c, a),
    ]).amin(dim=0)
    inside = (low <= 0).all(dim=-1) & (high >= 0).all(dim=-1)
    return torch.where(inside, torch.zeros_like(candidates), candidates)


def bin_tiles(projection: Projection, tiles_x: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage 2: (tile ids, Gaussian ids) of every pair, sorted by tile then depth.

    Pairs whose Gaussian stays below alpha = 1/255 over the whole tile are dropped: the
    reference skips such a Gaussian at every pixel of that tile, so no output changes.
    """
    with torch.no_grad():
        visible = torch.nonzero(projection.radii > 0).squeeze(1)
        visible = visible[torch.sort(projection.depths[visible], stable=True).indices]
        low = projection.tile_min[visible]
        span = projection.tile_max[visible] - low
        counts = span.prod(dim=-1)
        gaussian_ids = torch.repeat_interleave(visible, counts)
        first = torch.cumsum(counts, 0) - counts
        offset = torch.arange(gaussian_ids.numel(), device=visible.device) - torch.repeat_interleave(first, counts)
        width = torch.repeat_interleave(span[:, 0], counts)
        tile_x = torch.repeat_interleave(low[:, 0], counts) + offset % width
        tile_y = torch.repeat_interleave(low[:, 1], counts) + offset // width

        # Offsets from the Gaussian's centre to the tile's first and last pixel centres.
        means2d = projection.means2d.detach()[gaussian_ids]
        tile_first = torch.stack([tile_x, tile_y], dim=-1).to(means2d.dtype) * TILE_SIZE
        q_min = _min_quadratic_over_box(projection.conics.detach()[gaussian_ids],
                                        tile_first - means2d, tile_first + (TILE_SIZE - 1) - means2d)
        peak_alpha = projection.opacities.detach()[gaussian_ids] * torch.exp(-0.5 * q_min)
        # A small margin keeps pairs whose float rounding might just reach the threshold.
        reaches = peak_alpha >= ALPHA_MIN * (1.0 - 1e-3)
        tile_ids = (tile_y * tiles_x + tile_x)[reaches]
        gaussian_ids = gaussian_ids[reaches]
        order = torch.sort(tile_ids, stable=True).indices
        return tile_ids[order], gaussian_ids[order]


def _alpha(features: torch.Tensor, present: torch.Tensor, tile_origins: torch.Tensor,
           offsets_1d: torch.Tensor) -> torch.Tensor:
    """Opacity of each pair at each pixel of its tile, 0 where the reference skips it.

    Args:
        features: [T, K, 10] per-pair features (columns ``_MX`` ... ``_INV_DEPTH``).
        present: [T, K] bool, False for padding.
        tile_origins: [T, 2] pixel (x, y) of each tile's first pixel.
        offsets_1d: [16] pixel offsets 0..15 within a tile.
    Returns [T, K, 256], pixels row-major within the tile.

    A tile's pixels form a 16x16 grid, so dx depends on the column only and dy on the row
    only; the quadratic form splits into two [T, K, 16] terms and one outer product.
    """
    dx = features[:, :, _MX, None] - (tile_origins[:, None, 0, None] + offsets_1d)   # [T, K, 16]
    dy = features[:, :, _MY, None] - (tile_origins[:, None, 1, None] + offsets_1d)
    a, b, c = (features[:, :, i, None] for i in (_CA, _CB, _CC))
    along_x = -0.5 * a * dx * dx                                        # [T, K, 16(x)]
    along_y = -0.5 * c * dy * dy                                        # [T, K, 16(y)]
    power = (along_y[..., :, None] + along_x[..., None, :]
             - (b * dy)[..., :, None] * dx[..., None, :]).flatten(-2)   # [T, K, 256]
    raw_alpha = features[:, :, _OPACITY, None] * torch.exp(power)
    # min(0.99, raw) whose gradient passes the clamp as if it were not there, as the reference's
    # backward computes it (``dL_dG = o dL_dalpha`` for every blended pair): a saturated
    # Gaussian still learns from the pixels at its centre.
    alpha = raw_alpha - torch.clamp_min(raw_alpha - ALPHA_MAX, 0.0).detach()
    counts = (power <= 0) & (alpha >= ALPHA_MIN) & present[:, :, None]
    return torch.where(counts, alpha, torch.zeros_like(alpha))


def _blend(features: torch.Tensor, present: torch.Tensor, tile_origins: torch.Tensor,
           offsets_1d: torch.Tensor):
    """Differentiable front-to-back blending of whole padded pair lists.

    Returns (rgb [T, 256, 3], inv_depth [T, 256], transmittance [T, 256]).
    """
    alpha = _alpha(features, present, tile_origins, offsets_1d)
    one_minus = 1.0 - alpha
    after = torch.cumprod(one_minus, dim=1)                            # T after each pair
    before = torch.cat([torch.ones_like(after[:, :1]), after[:, :-1]], dim=1)
    blended = (after >= TRANSMITTANCE_MIN).detach()
    weights = torch.where(blended, alpha * before, torch.zeros_like(alpha))
    rgb = torch.bmm(weights.transpose(1, 2), features[:, :, _R:_B + 1])
    inv_depth = torch.bmm(weights.transpose(1, 2), features[:, :, _INV_DEPTH, None])[..., 0]
    transmittance = torch.where(blended, one_minus, torch.ones_like(one_minus)).prod(dim=1)
    return rgb, inv_depth, transmittance


def _blend_blocked(features: torch.Tensor, present: torch.Tensor, tile_origins: torch.Tensor,
                   offsets_1d: torch.Tensor, block: int):
    """No-grad blending in depth blocks that stops once every pixel of a tile has terminated.

    Same results as :func:`_blend`, plus ``live`` [T, K]: pairs that reach a pixel which has
    not terminated before them. Pairs that are not live change no pixel and get no gradient.
    """
    tiles, length = present.shape
    dtype, device = features.dtype, features.device
    rgb = torch.zeros(tiles, PIXELS_PER_TILE, 3, dtype=dtype, device=device)
    inv_depth = torch.zeros(tiles, PIXELS_PER_TILE, dtype=dtype, device=device)
    transmittance = torch.ones(tiles, PIXELS_PER_TILE, dtype=dtype, device=device)
    # Product of (1 - alpha) over *all* pairs so far, terminators included: once below the
    # threshold it stays there, which is how later pairs know the pixel has stopped.
    running = torch.ones(tiles, PIXELS_PER_TILE, dtype=dtype, device=device)
    live = torch.zeros(tiles, length, dtype=torch.bool, device=device)
    active = torch.arange(tiles, device=device)
    for start in range(0, length, block):
        stop = min(start + block, length)
        alpha = _alpha(features[active, start:stop], present[active, start:stop],
                       tile_origins[active], offsets_1d)
        one_minus = 1.0 - alpha
        after = running[active, None, :] * torch.cumprod(one_minus, dim=1)
        before = torch.cat([running[active, None, :], after[:, :-1]], dim=1)
        blended = after >= TRANSMITTANCE_MIN
        weights = torch.where(blended, alpha * before, torch.zeros_like(alpha))
        rgb[active] += torch.bmm(weights.transpose(1, 2), features[active, start:stop, _R:_B + 1])
        inv_depth[active] += torch.bmm(weights.transpose(1, 2),
                                       features[active, start:stop, _INV_DEPTH, None])[..., 0]
        transmittance[active] *= torch.where(blended, one_minus, torch.ones_like(one_minus)).prod(dim=1)
        live[active, start:stop] = ((alpha > 0) & (before >= TRANSMITTANCE_MIN)).any(dim=2)
        running[active] = after[:, -1]
        unfinished = (running[active] >= TRANSMITTANCE_MIN).any(dim=1) & present[active, stop - 1]
        active = active[unfinished]
        if active.numel() == 0:
            break
    return rgb, inv_depth, transmittance, live


def _tile_chunks(tile_ids: torch.Tensor, num_tiles: int, depth_block: int | None = None):
    """Group the occupied tiles into chunks whose evaluated size stays under CHUNK_ELEMENTS.

    Yields (tiles [T], starts [T], counts [T], padded length K). Tiles are taken in order of
    decreasing pair count so that padding stays small. With ``depth_block`` the chunk is
    evaluated ``depth_block`` pairs at a time, so more tiles fit in one chunk.
    """
    counts = torch.bincount(tile_ids, minlength=num_tiles)
    starts = torch.cumsum(counts, 0) - counts
    occupied = torch.nonzero(counts).squeeze(1)
    occupied = occupied[torch.sort(counts[occupied], descending=True, stable=True).indices]
    counts_cpu = counts[occupied].tolist()
    begin = 0
    while begin < len(counts_cpu):
        longest = counts_cpu[begin]
        evaluated = longest if depth_block is None else min(longest, depth_block)
        size = max(1, CHUNK_ELEMENTS // (evaluated * PIXELS_PER_TILE))
        tiles = occupied[begin:begin + size]
        yield tiles, starts[tiles], counts[tiles], longest
        begin += size


def _gather_padded(values: torch.Tensor, starts: torch.Tensor, counts: torch.Tensor, length: int):
    """Rows ``values[starts[t] : starts[t] + counts[t]]`` padded to ``length``: ([T, K, ...], [T, K])."""
    positions = starts[:, None] + torch.arange(length, device=starts.device)[None, :]
    present = torch.arange(length, device=starts.device)[None, :] < counts[:, None]
    positions = torch.where(present, positions, torch.zeros_like(positions))
    return values[positions], present


def _blend_tiles(features: torch.Tensor, tile_ids: torch.Tensor, gaussian_ids: torch.Tensor,
                 num_tiles: int, tile_origins: torch.Tensor, differentiable: bool):
    """Stages 3-4: per-tile colour, inverse depth and transmittance, [num_tiles, 256, ...].

    Without gradients one blocked pass does everything. With gradients, a blocked no-grad pass
    first finds the live pairs; the differentiable pass then runs on those only, chunk by
    chunk under activation checkpointing so that memory stays bounded.
    """
    dtype, device = features.dtype, features.device
    offsets_1d = torch.arange(TILE_SIZE, device=device, dtype=dtype)
    rgb = torch.zeros(num_tiles, PIXELS_PER_TILE, 3, dtype=dtype, device=device)
    inv_depth = torch.zeros(num_tiles, PIXELS_PER_TILE, dtype=dtype, device=device)
    transmittance = torch.ones(num_tiles, PIXELS_PER_TILE, dtype=dtype, device=device)
    pair_index = torch.arange(tile_ids.numel(), device=device)
    live = torch.zeros(tile_ids.numel(), dtype=torch.bool, device=device)
    with torch.no_grad():
        for tiles, starts, counts, length in _tile_chunks(tile_ids, num_tiles, DEPTH_BLOCK):
            index, present = _gather_padded(pair_index, starts, counts, length)
            chunk = _blend_blocked(features.detach()[gaussian_ids[index]], present,
                                   tile_origins[tiles], offsets_1d, DEPTH_BLOCK)
            live[index[present & chunk[3]]] = True
            if not differentiable:
                rgb[tiles], inv_depth[tiles], transmittance[tiles] = chunk[:3]
    if not differentiable:
        return rgb, inv_depth, transmittance

    tile_ids, gaussian_ids = tile_ids[live], gaussian_ids[live]
    if tile_ids.numel() == 0:
        # Nothing reaches a pixel (empty model, or a view that sees nothing): keep the outputs
        # in the graph with zero gradients, so backward() and means2d.grad still work.
        anchor = features[:0].sum()  # 0, whatever the (possibly non-finite) feature values
        return rgb + anchor, inv_depth + anchor, transmittance + anchor
    pair_index = torch.arange(tile_ids.numel(), device=device)
    for tiles, starts, counts, length in _tile_chunks(tile_ids, num_tiles):
        index, present = _gather_padded(pair_index, starts, counts, length)

        def blend_chunk(feats, ids=gaussian_ids[index], present=present, origins=tile_origins[tiles]):
            # index_select, not feats[ids]: its backward (index_add) is deterministic on the
            # CPU, where indexing's backward (index_put with accumulate) adds in parallel.
            gathered = feats.index_select(0, ids.reshape(-1)).reshape(*ids.shape, feats.shape[1])
            return _blend(gathered, present, origins, offsets_1d)

        chunk_rgb, chunk_depth, chunk_t = checkpoint(blend_chunk, features, use_reentrant=False)
        rgb = rgb.index_copy(0, tiles, chunk_rgb)
        inv_depth = inv_depth.index_copy(0, tiles, chunk_depth)
        transmittance = transmittance.index_copy(0, tiles, chunk_t)
    return rgb, inv_depth, transmittance


def _untile(values: torch.Tensor, tiles_x: int, tiles_y: int, width: int, height: int) -> torch.Tensor:
    """[tiles, 256, C] -> [C, H, W] (cropping the partial tiles at the right and bottom)."""
    channels = values.shape[-1]
    grid = values.reshape(tiles_y, tiles_x, TILE_SIZE, TILE_SIZE, channels)
    image = grid.permute(4, 0, 2, 1, 3).reshape(channels, tiles_y * TILE_SIZE, tiles_x * TILE_SIZE)
    return image[:, :height, :width]


def rasterize(projection: Projection, means2d: torch.Tensor, camera: Camera,
              background: torch.Tensor):
    """Stages 2-4 for one camera. ``means2d`` is the tensor the image is differentiated by."""
    width, height = camera.width, camera.height
    tiles_x = (width + TILE_SIZE - 1) // TILE_SIZE
    tiles_y = (height + TILE_SIZE - 1) // TILE_SIZE
    num_tiles = tiles_x * tiles_y
    device, dtype = means2d.device, means2d.dtype
    features = torch.cat([
        means2d, projection.conics, projection.opacities[:, None], projection.colors,
        (1.0 / projection.depths)[:, None],
    ], dim=1)
    tile_ids, gaussian_ids = bin_tiles(projection, tiles_x)
    tile_index = torch.arange(num_tiles, device=device)
    tile_origins = torch.stack([tile_index % tiles_x, tile_index // tiles_x], dim=-1).to(dtype) * TILE_SIZE
    differentiable = features.requires_grad and torch.is_grad_enabled()
    rgb, inv_depth, transmittance = _blend_tiles(features, tile_ids, gaussian_ids, num_tiles,
                                                 tile_origins, differentiable)
    color = _untile(rgb, tiles_x, tiles_y, width, height)
    transmittance = _untile(transmittance[..., None], tiles_x, tiles_y, width, height)[0]
    inv_depth = _untile(inv_depth[..., None], tiles_x, tiles_y, width, height)[0]
    image = color + transmittance[None] * background[:, None, None]
    return image, 1.0 - transmittance, inv_depth


def render_reference(gaussians: Gaussians, cameras: list[Camera], background: torch.Tensor,
                     sh_degree: int, scaling_modifier: float, antialiasing: bool,
                     batched: bool) -> RenderOutput:
    """Backend entry point used by :func:`rasterizer.render` (see its docstring)."""
    projections = [project(gaussians, cam, sh_degree, scaling_modifier, antialiasing) for cam in cameras]
    means2d = torch.stack([p.means2d for p in projections]) if batched else projections[0].means2d
    if means2d.requires_grad:
        means2d.retain_grad()
    results = []
    for b, (projection, camera) in enumerate(zip(projections, cameras)):
        results.append(rasterize(projection, means2d[b] if batched else means2d, camera, background))
    images, alphas, inv_depths = (torch.stack(r) for r in zip(*results))
    radii = torch.stack([p.radii for p in projections])
    if not batched:
        images, alphas, inv_depths, radii = images[0], alphas[0], inv_depths[0], radii[0]
    return RenderOutput(image=images, alpha=alphas, inv_depth=inv_depths, radii=radii, means2d=means2d)
