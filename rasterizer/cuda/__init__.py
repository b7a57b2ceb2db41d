"""The CUDA backend: NVRTC-compiled kernels behind ``render(..., backend="cuda")``.

Two autograd functions mirror the reference backend's two stages:

* :class:`_Project` (kernel ``project_forward``/``project_backward``): activated Gaussians ->
  screen-space means, conic + opacity, colour, inverse depth, plus radii and tile rectangles;
* :class:`_Rasterize` (``duplicate_with_keys``, a stable radix sort of the pairs by tile
  (``sort.cu``, :func:`.sort.sort_pairs`), ``tile_ranges``, ``render_forward`` and
  ``render_backward``): screen-space Gaussians -> image, alpha, inverse depth.

``means2d`` is the tensor between the two, so ``means2d.grad`` is filled as in the reference
backend. Float32 only. :func:`render_for_training` runs the same stages without autograd, for
the training loop (its backward is called explicitly).

Batches. A list of V cameras of one image size is rendered by one set of launches (not V):
the projection writes [V, N, ...] rows (one per Gaussian and view), one sort orders the pairs
of every view (keys ``view * tiles + tile``), the blending kernels run a block per tile of every
view (heaviest tiles first, :func:`heaviest_tiles_first`), and the projection's backward sums
each Gaussian's gradient over the views. The
stage functions below take ``camera_data`` [25] (one camera: [N, ...] rows, [3, H, W] images) or
[V, 25] (a batch: [V, N, ...] rows, [V, 3, H, W] images). The projection stage takes a batch of
cameras of any image sizes (each camera's block holds its tile grid, so a view's Gaussians reach
only its own tiles); the blending stage takes one size per launch, so a caller with mixed sizes
blends them at the largest width and height, each view in the top-left corner of its image,
its own pixels as if rendered alone (:func:`render_for_training`'s canvas).

Sizing the sort. The number of (tile, Gaussian) pairs is known only on the GPU. Without a
:class:`PairBudget` the host reads it (one synchronisation per camera: right for single
frames). With one, the sort gets the budget's capacity at once, and the count is copied back
asynchronously; :meth:`PairBudget.overflowed` later says whether a render did not fit (then
the caller renders again, and the budget has grown). The training loop uses this, so that the
CPU queues the next step while the GPU still runs this one.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NamedTuple

import torch

from ..camera import Camera, canvas_size
from ..capacity import GrowingCapacity
from ..gaussians import Gaussians
from ..reference import FRUSTUM_GUARD, TILE_SIZE
from ..render import RenderOutput
from .compiler import FLOAT, INT, LONGLONG, POINTER, CudaModule, KernelError, copy_to_host_async, load_module
from .sort import sort_pairs

__all__ = ["is_available", "render_cuda", "render_for_training", "TrainingRender", "KernelError", "PairBudget",
           "PendingCount", "FusedAdamStep", "camera_block"]

_SOURCE = "splat.cu"
_THREADS = 256
# Rows of a 16x16 tile that one blending block covers (splat.cu's BLEND_ROWS): TILE_SIZE /
# BLEND_ROWS blocks a tile, so that a tile's pixels spread over several SMs and a block stops
# (forward) or starts (backward) where its own rows' last contributor is, not the tile's, and
# walks only the Gaussians that reach its rows. Measured on an H200 (bench/profile_train.py, shapes
# at step 6900): blending forward + backward 1.78 ms a step with whole tiles, 1.38 with 8 rows,
# 1.16 with 4, 1.11 with 2; on beer (720x1280) 4 rows beat 8. 4: nearly all of 2's gain, with
# blocks of 64 threads rather than 32.
BLEND_ROWS = 4
# A Gaussian whose tile rectangle has more tiles than this is walked by its whole warp (see
# splat.cu, count_tiles / write_pairs); smaller ones by their own thread.
_COOPERATIVE_TILES = 32
# Tile indices 0..32766 fit a 16-bit key below splat.cu's sentinel (32767), which marks the
# unused slots of a budgeted sort.
_MAX_TILES_16 = 32767


@functools.lru_cache(maxsize=None)
def is_available() -> bool:
    """True when a CUDA GPU, cuda-bindings and NVRTC are all usable."""
    if not torch.cuda.is_available():
        return False
    try:
        from .compiler import nvrtc_version  # noqa: PLC0415

        nvrtc_version()
        from cuda.bindings import driver  # noqa: PLC0415, F401
    except (ImportError, KernelError, OSError):
        return False
    return True


def _module(device: torch.device) -> CudaModule:
    return load_module(_SOURCE, device.index if device.index is not None else torch.cuda.current_device(),
                       (f"BLEND_ROWS={BLEND_ROWS}",))


def _blend_launch(order: torch.Tensor) -> tuple[tuple[int], tuple[int, int]]:
    """Grid and block of the blending kernels for tiles taken in ``order``: TILE_SIZE /
    BLEND_ROWS blocks a tile, each of TILE_SIZE x BLEND_ROWS threads."""
    return (order.numel() * (TILE_SIZE // BLEND_ROWS),), (TILE_SIZE, BLEND_ROWS)


class PendingCount(NamedTuple):
    """A budgeted render's pair count on its way to the host: ``host`` (pinned int64 [1]) holds
    it once ``event`` has completed; ``count`` is the device tensor it comes from and
    ``capacity`` what the render was given. ``reusable``: whether ``host`` may serve a later
    render (not when a CUDA graph writes it at every replay)."""

    host: torch.Tensor
    event: torch.cuda.Event
    capacity: int
    count: torch.Tensor
    reusable: bool


class PairBudget(GrowingCapacity):
    """Room for the (tile, Gaussian) pairs of the renders a caller makes, sized without waiting
    for the GPU (see the module docstring).

    Typical use, once per training step::

        out = render(..., pair_budget=budget); loss.backward()
        if budget.overflowed():      # waits only until the GPU has counted this step's pairs
            ... zero the gradients and render again (the budget has grown) ...

    The first render through a new budget reads the count as an unbudgeted render does. The
    capacity then only grows, to ``headroom`` times the largest count seen, so a step whose view
    or model needs more than any before it is rendered twice, and the others once. A budget
    belongs to one device and one thread.

    A render captured into a CUDA graph reserves its room once, at the capture: the caller
    takes that count back with :meth:`detach_pending` and hands it in again with
    :meth:`requeue` after each replay (``trainer.graphed_step``).
    """

    def __init__(self, headroom: float = 1.5, minimum: int = 1 << 16):
        super().__init__(headroom, minimum)
        self.overflows = 0           # renders that did not fit (and were redone by the caller)
        self._pending: list[PendingCount] = []
        self._spare: list[torch.Tensor] = []

    def stock_host_buffer(self) -> None:
        """Make sure a pinned host buffer is at hand for the next :meth:`reserve`: one inside a
        CUDA graph capture may not allocate pinned memory."""
        if not self._spare:
            self._spare.append(torch.empty(1, dtype=torch.int64, pin_memory=True))

    def reserve(self, count: torch.Tensor) -> int:
        """Capacity for one render whose pair count is the 1-element device tensor ``count``;
        queues its copy to the host. Called by the backend."""
        capturing = torch.cuda.is_current_stream_capturing()
        if capturing and not self._spare:
            raise RuntimeError("PairBudget.reserve in a CUDA graph capture needs stock_host_buffer() first")
        host = self._spare.pop() if self._spare else torch.empty(1, dtype=torch.int64, pin_memory=True)
        if capturing:
            copy_to_host_async(host, count)
            # An external event is recorded by every replay of the graph, where the host can
            # wait for it (an ordinary one would only order streams inside the capture).
            event = torch.cuda.Event(external=True)
        else:
            host.copy_(count, non_blocking=True)
            event = torch.cuda.Event()
        event.record()
        self._pending.append(PendingCount(host, event, self.capacity, count, reusable=not capturing))
        return self.capacity

    def detach_pending(self) -> list[PendingCount]:
        """The counts queued since the last :meth:`overflowed`, no longer pending here."""
        pending, self._pending = self._pending, []
        return pending

    def requeue(self, pending: list[PendingCount]) -> None:
        """Counts that are on their way again (a CUDA graph's replay)."""
        self._pending.extend(pending)

    def pending_overflow(self) -> torch.Tensor | None:
        """Whether a render since the last :meth:`overflowed` needed more pairs than it was
        given, as a bool device tensor [1] (no host wait: for a caller that agrees on it with
        other processes on the GPU); None when no render is pending."""
        if not self._pending:
            return None
        excess = [item.count - item.capacity for item in self._pending]
        return (excess[0] if len(excess) == 1 else torch.cat(excess).max().reshape(1)) > 0

    def overflowed(self) -> bool:
        """Whether any render since the last call needed more pairs than it was given (its image
        and gradients are then incomplete). Waits for the GPU to have counted them, not for the
        renders to finish; grows the capacity to fit what was seen."""
        overflow, largest = False, 0
        for item in self._pending:
            item.event.synchronize()
            pairs = int(item.host[0])
            largest = max(largest, pairs)
            overflow |= pairs > item.capacity
            if item.reusable:
                self._spare.append(item.host)
        self._pending.clear()
        if overflow:
            self.overflows += 1
        self.grow(largest)
        return overflow


def _ptr(tensor: torch.Tensor) -> tuple:
    return (tensor.data_ptr(), POINTER)


def _ptr_or_null(tensor: torch.Tensor | None) -> tuple:
    return (tensor.data_ptr(), POINTER) if tensor is not None else (0, POINTER)


@dataclass(frozen=True)
class FusedAdamStep:
    """One Adam step for the higher SH coefficients (``sh_rest``), taken by the projection's
    backward where it computes their gradient (``adam.cuh``), so that the gradient is never
    stored (180 of a Gaussian's 236 gradient bytes, at the training step's memory peak).

    ``param`` must be the very tensor rendered (updated in place); ``exp_avg`` and
    ``exp_avg_sq`` are its Adam moments (same shape, contiguous, float32); the scalars are those
    of ``torch.optim.Adam``'s step: ``step_size = lr / (1 - beta1^step)`` and
    ``bias_correction2_sqrt = sqrt(1 - beta2^step)`` for the step count after this step.
    ``scalars``, if given, is a float32 [2] device buffer the kernel reads those two from
    instead (when it runs, not when it is queued): what a CUDA graph's replays rewrite between
    steps (:meth:`scalar_values` holds what to write). ``trainer.cuda.CudaAdam.fused_step``
    makes one."""

    param: torch.Tensor
    exp_avg: torch.Tensor
    exp_avg_sq: torch.Tensor
    beta1: float
    beta2: float
    eps: float
    step_size: float
    bias_correction2_sqrt: float
    scalars: torch.Tensor | None = None

    def arguments(self) -> list[tuple]:
        """The kernel arguments after ``grad_sh_rest``, as ``project_backward`` takes them."""
        return [_ptr(self.exp_avg), _ptr(self.exp_avg_sq), (self.beta1, FLOAT), (self.beta2, FLOAT),
                (self.eps, FLOAT), (self.step_size, FLOAT), (self.bias_correction2_sqrt, FLOAT),
                _ptr_or_null(self.scalars)]

    def scalar_values(self) -> list[float]:
        """(step_size, bias_correction2_sqrt), in the order of a ``scalars`` buffer."""
        return [self.step_size, self.bias_correction2_sqrt]


# project_backward's fused-update arguments when there is no update.
_NO_ADAM_STEP = [(0, POINTER), (0, POINTER)] + [(0.0, FLOAT)] * 5 + [(0, POINTER)]


@functools.lru_cache(maxsize=1024)
def camera_block(camera: Camera, device: torch.device) -> torch.Tensor:
    """float32[25] as ``splat.cu``'s ``CameraBlock``: R, t, centre, fx, fy, cx, cy, ratio clamps,
    the image's tile grid (tiles_x, tiles_y).

    Cached per camera object (cameras are immutable), because uploading a small host array
    waits for the GPU: training renders the same views again and again."""
    matrix = camera.world_to_camera
    guard_x = FRUSTUM_GUARD * camera.width / (2.0 * camera.fx)
    guard_y = FRUSTUM_GUARD * camera.height / (2.0 * camera.fy)
    values = (matrix[:3, :3].reshape(-1).tolist() + matrix[:3, 3].tolist() + camera.center.tolist()
              + [camera.fx, camera.fy, camera.cx, camera.cy,
                 -(camera.cx / camera.fx + guard_x), (camera.width - camera.cx) / camera.fx + guard_x,
                 -(camera.cy / camera.fy + guard_y), (camera.height - camera.cy) / camera.fy + guard_y,
                 *_tile_grid(camera.width, camera.height)])
    return torch.tensor(values, dtype=torch.float32, device=device)


def _tile_grid(width: int, height: int) -> tuple[int, int]:
    """(tiles_x, tiles_y) of a width x height image."""
    return (width + TILE_SIZE - 1) // TILE_SIZE, (height + TILE_SIZE - 1) // TILE_SIZE


def _grid(count: int) -> tuple[int]:
    return ((count + _THREADS - 1) // _THREADS,)


def _views(camera_data: torch.Tensor) -> int:
    """Cameras in a camera block: [25] is one, [V, 25] is V."""
    return 1 if camera_data.dim() == 1 else camera_data.shape[0]


def camera_blocks(cameras: list[Camera], device: torch.device) -> torch.Tensor:
    """float32 [V, 25]: :func:`camera_block` of each camera (each cached; stacked on the device);
    the cameras may have different image sizes."""
    return torch.stack([camera_block(camera, device) for camera in cameras])


# ----- the kernels' stages as plain functions (shared by autograd and the training path) -------
def _project_forward(params: tuple, camera_data: torch.Tensor, settings: tuple) -> tuple:
    """Raw Gaussians (means, log_scales, quaternions, opacity_logits, sh_dc, sh_rest) -> means2d,
    conic_opacity, colors, inv_depths, depths, radii, rects, touched."""
    means, log_scales, quaternions, opacity_logits, sh_dc, sh_rest = params
    degree, scale_mod, antialiasing = settings
    n, k_rest = means.shape[0], sh_rest.shape[1]
    device = means.device
    lead = (n,) if camera_data.dim() == 1 else (camera_data.shape[0], n)  # [N] or [V, N]
    empty = functools.partial(torch.empty, device=device)
    means2d, conic_opacity = empty(*lead, 2), empty(*lead, 4)
    colors, inv_depths, depths = empty(*lead, 3), empty(lead), empty(lead)
    radii, rects, touched = (empty(lead, dtype=torch.int32), empty(*lead, 4, dtype=torch.int32),
                             empty(lead, dtype=torch.int32))
    _module(device).launch("project_forward", (*_grid(n), _views(camera_data)), (_THREADS,), [
        (n, INT), (k_rest, INT), (degree, INT), (scale_mod, FLOAT), (int(antialiasing), INT), _ptr(camera_data),
        *map(_ptr, params), _ptr(means2d), _ptr(conic_opacity), _ptr(colors), _ptr(inv_depths), _ptr(depths),
        _ptr(radii), _ptr(rects), _ptr(touched), (_COOPERATIVE_TILES, INT)])
    return means2d, conic_opacity, colors, inv_depths, depths, radii, rects, touched


def _project_backward(params: tuple, camera_data: torch.Tensor, radii: torch.Tensor, settings: tuple,
                      incoming: list, sh_rest_step: FusedAdamStep | None = None,
                      pairs: tuple[torch.Tensor, int] | None = None) -> list[torch.Tensor | None]:
    """Gradients of the six raw parameters from those of (means2d, conic_opacity, colors,
    inv_depths), summed over the views of a batch; a ``None`` in ``incoming`` is a zero gradient.
    With ``sh_rest_step``, ``sh_rest`` takes that Adam step instead and its gradient (the last
    entry) is None; ``pairs`` (the render's device pair count and the capacity it was given, see
    :func:`_rasterize_forward`) then skips the step on the GPU when the render overflowed."""
    degree, scale_mod, antialiasing = settings
    means, sh_rest = params[0], params[5]
    n, k_rest = means.shape[0], sh_rest.shape[1]
    views = _views(camera_data)
    # Written in full by the kernel (zeros for culled Gaussians): no zero-fill needed.
    grads: list[torch.Tensor | None] = [torch.empty_like(t) for t in params[:5]]
    grads.append(torch.empty_like(sh_rest) if sh_rest_step is None or views > 1 else None)
    incoming = [g.contiguous() if g is not None else torch.zeros(views * n * width, device=means.device)
                for g, width in zip(incoming, (2, 4, 3, 1))]
    fused = _NO_ADAM_STEP if sh_rest_step is None else sh_rest_step.arguments()
    count, capacity = pairs if sh_rest_step is not None and pairs is not None else (None, 0)
    _module(means.device).launch("project_backward", _grid(n), (_THREADS,), [
        (n, INT), (views, INT), (k_rest, INT), (degree, INT), (scale_mod, FLOAT), (int(antialiasing), INT),
        _ptr(camera_data), *map(_ptr, params), _ptr(radii), *map(_ptr, incoming), *map(_ptr_or_null, grads),
        *fused, _ptr_or_null(count), (capacity, LONGLONG)])
    if sh_rest_step is not None:
        grads[5] = None
    return grads


def _rasterize_forward(means2d, conic_opacity, colors, inv_depths, background, depths, rects, touched,
                       size: tuple[int, int], budget: "PairBudget | None"):
    """Screen-space Gaussians ([N, ...] rows, or [V, N, ...] for a batch of V views) -> (image
    [3, H, W] or [V, 3, H, W], alpha, inv_depth, state for the backward, pairs). ``pairs`` is
    (the pair count as a device int64 [1], the capacity the render was given) for a render
    through a budget, which overflowed when the count exceeds the capacity; None when the
    capacity was the exact count."""
    width, height = size
    device = means2d.device
    tiles_x, tiles_y = _tile_grid(width, height)
    module = _module(device)
    views = 1 if means2d.dim() == 2 else means2d.shape[0]
    rows_per_view = means2d.shape[-2]
    n = views * rows_per_view
    lead = () if means2d.dim() == 2 else (views,)
    # Depth order once over each view's Gaussians, then a stable sort of the pairs by key only.
    if views == 1 or n == 0:
        depth_order = torch.sort(depths.reshape(-1), stable=True).indices.to(torch.int32)
    else:
        first_rows = torch.arange(0, n, rows_per_view, device=device)[:, None]
        depth_order = (torch.sort(depths, dim=-1, stable=True).indices + first_rows).reshape(-1).to(torch.int32)
    offsets = torch.cumsum(touched.reshape(-1)[depth_order], 0, dtype=torch.int64)
    bits = 16 if views * tiles_x * tiles_y <= _MAX_TILES_16 else 32
    key_type = torch.int16 if bits == 16 else torch.int32
    pairs = None
    if n == 0:
        capacity = 0
    elif budget is None or budget.capacity == 0:
        capacity = int(offsets[-1].item())  # the count, read on the host: a synchronisation
        if budget is not None:
            budget.grow(capacity)  # the first render through the budget: read synchronously
    else:
        capacity = budget.reserve(offsets[-1:])
        pairs = (offsets[-1:], capacity)
    # Slots past the last pair (a budgeted render's spare room) get a sentinel key, written
    # by the kernel, that sorts after every tile.
    keys = torch.empty(capacity, dtype=key_type, device=device)
    values = torch.empty(capacity, dtype=torch.int32, device=device)
    module.launch(f"duplicate_with_keys{bits}", _grid(n), (_THREADS,), [
        (n, INT), (tiles_x, INT), (rows_per_view, INT), (tiles_x * tiles_y, INT), (capacity, LONGLONG),
        _ptr(depth_order), _ptr(means2d), _ptr(conic_opacity), _ptr(rects), _ptr(offsets), _ptr(touched),
        _ptr(keys), _ptr(values), (_COOPERATIVE_TILES, INT)])
    # Both sentinels (32767, 2**31 - 1) use every bit below the sign: 15 or 31 bits of key.
    sort_pairs(keys, values, 15 if bits == 16 else 31)
    sorted_tiles, point_list = keys, values
    ranges = torch.zeros(views * tiles_x * tiles_y, 2, dtype=torch.int32, device=device)
    module.launch(f"tile_ranges{bits}", _grid(capacity), (_THREADS,), [
        (capacity, LONGLONG), _ptr(sorted_tiles), _ptr(ranges)])
    image = torch.empty(*lead, 3, height, width, device=device)
    transmittance = torch.empty(*lead, height, width, device=device)
    alpha = torch.empty(*lead, height, width, device=device)
    inv_depth = torch.empty(*lead, height, width, device=device)
    last = torch.empty(*lead, height, width, dtype=torch.int32, device=device)
    order = heaviest_tiles_first(ranges)
    module.launch("render_forward", *_blend_launch(order), [
        (width, INT), (height, INT), (tiles_x, INT), (tiles_y, INT), _ptr(order), _ptr(ranges), _ptr(point_list),
        _ptr(means2d), _ptr(conic_opacity), _ptr(colors), _ptr(inv_depths), _ptr(background), _ptr(image),
        _ptr(transmittance), _ptr(alpha), _ptr(inv_depth), _ptr(last)])
    return image, alpha, inv_depth, (ranges, point_list, transmittance, last, order), pairs


def heaviest_tiles_first(ranges: torch.Tensor) -> torch.Tensor:
    """The order in which the blending kernels take the tiles: tile indices (int32), the longest
    pair list first. ``ranges``: [tiles, 2] int32, each tile's (start, end) in the sorted pairs.
    The backward takes the forward's order: the pairs it walks are a prefix of the same lists."""
    return torch.argsort(ranges[:, 1] - ranges[:, 0], descending=True).to(torch.int32)


def _rasterize_backward(means2d, conic_opacity, colors, inv_depths, background, state, size: tuple[int, int],
                        g_image, g_alpha=None, g_inv_depth=None) -> list[torch.Tensor]:
    """Gradients of (means2d, conic_opacity, colors, inv_depths) from those of the image, alpha
    and inverse depth (``None``: no gradient)."""
    ranges, point_list, transmittance, last, order = state
    width, height = size
    tiles_x, tiles_y = _tile_grid(width, height)
    device = means2d.device
    g_image = (g_image.contiguous() if g_image is not None
               else torch.zeros(*transmittance.shape[:-2], 3, height, width, device=device))
    # Outputs without a gradient are passed as null pointers (the kernel reads them as 0).
    # The contiguous tensors stay referenced here until the launch has been queued.
    present = [g.contiguous() if g is not None else None for g in (g_inv_depth, g_alpha)]
    # The kernel accumulates with atomics: one zeroed buffer holds the four gradients.
    lead = means2d.shape[:-1]
    n = means2d.shape[:-1].numel()
    buffer = torch.zeros(n * 10, device=device)
    grads = [buffer[:2 * n].view(*lead, 2), buffer[2 * n:6 * n].view(*lead, 4), buffer[6 * n:9 * n].view(*lead, 3),
             buffer[9 * n:].view(lead)]
    kernel = "render_backward" if g_inv_depth is not None else "render_backward_no_depth"
    _module(device).launch(kernel, *_blend_launch(order), [
        (width, INT), (height, INT), (tiles_x, INT), (tiles_y, INT), _ptr(order), _ptr(ranges), _ptr(point_list),
        _ptr(means2d), _ptr(conic_opacity), _ptr(colors), _ptr(inv_depths), _ptr(background), _ptr(transmittance),
        _ptr(last), _ptr(g_image), *map(_ptr_or_null, present), *map(_ptr, grads)])
    return grads


# ----- autograd ------------------------------------------------------------------------------
class _Project(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means, log_scales, quaternions, opacity_logits, sh_dc, sh_rest, camera_data, settings):
        params = (means, log_scales, quaternions, opacity_logits, sh_dc, sh_rest)
        outputs = _project_forward(params, camera_data, settings)
        ctx.save_for_backward(*params, camera_data, outputs[5])
        ctx.settings = settings
        ctx.mark_non_differentiable(*outputs[4:])
        return outputs

    @staticmethod
    def backward(ctx, g_means2d, g_conic_opacity, g_colors, g_inv_depths, *_):
        *params, camera_data, radii = ctx.saved_tensors
        grads = _project_backward(tuple(params), camera_data, radii, ctx.settings,
                                  [g_means2d, g_conic_opacity, g_colors, g_inv_depths])
        return (*grads, None, None)


class _Rasterize(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d, conic_opacity, colors, inv_depths, background, depths, rects, touched, size, budget):
        image, alpha, inv_depth, state, _ = _rasterize_forward(means2d, conic_opacity, colors, inv_depths,
                                                               background, depths, rects, touched, size, budget)
        ctx.save_for_backward(means2d, conic_opacity, colors, inv_depths, background, *state)
        ctx.size = size
        return image, alpha, inv_depth

    @staticmethod
    def backward(ctx, g_image, g_alpha, g_inv_depth):
        means2d, conic_opacity, colors, inv_depths, background, *state = ctx.saved_tensors
        grads = _rasterize_backward(means2d, conic_opacity, colors, inv_depths, background, state, ctx.size,
                                    g_image, g_alpha, g_inv_depth)
        transmittance = state[2]
        g_background = None
        if ctx.needs_input_grad[4] and g_image is not None:
            # [3, H, W] * [H, W] (one view) or [V, 3, H, W] * [V, H, W] (a batch), summed per channel.
            weighted = g_image * transmittance.unsqueeze(-3)
            g_background = weighted.sum(dim=(-2, -1)).reshape(-1, 3).sum(dim=0)
        return (*grads, g_background, None, None, None, None, None)


def _raw_parameters(gaussians: Gaussians) -> tuple:
    """The six raw parameter tensors, contiguous (the kernels apply exp / normalise / sigmoid
    themselves: fewer launches)."""
    if gaussians.device.type != "cuda":
        raise ValueError("the CUDA backend renders Gaussians on a CUDA device; move them with .to('cuda')")
    if gaussians.dtype != torch.float32:
        raise ValueError("the CUDA backend renders float32 Gaussians; use backend='reference' for float64")
    return tuple(t.contiguous() for t in (gaussians.means, gaussians.log_scales, gaussians.quaternions,
                                          gaussians.opacity_logits, gaussians.sh_dc, gaussians.sh_rest))


def _settings(sh_degree: int, scaling_modifier: float, antialiasing: bool) -> tuple:
    """The projection's scalar settings (the same for every camera of a batch)."""
    return (sh_degree, scaling_modifier, antialiasing)


def render_cuda(gaussians: Gaussians, cameras: list[Camera], background: torch.Tensor, sh_degree: int,
                scaling_modifier: float, antialiasing: bool, batched: bool,
                pair_budget: PairBudget | None = None) -> RenderOutput:
    """Backend entry point used by :func:`rasterizer.render` (see its docstring). A batch (one
    image size, as ``render`` checks) is one set of kernel launches."""
    params = _raw_parameters(gaussians)
    device = gaussians.device
    background = background.to(device=device, dtype=torch.float32).contiguous()
    camera = cameras[0]
    camera_data = camera_blocks(cameras, device) if batched else camera_block(camera, device)
    projection = _Project.apply(*params, camera_data, _settings(sh_degree, scaling_modifier, antialiasing))
    means2d, conic_opacity, colors, inv_depth_g, depths, radii, rects, touched = projection
    if means2d.requires_grad:
        means2d.retain_grad()
    image, alpha, inv_depth = _Rasterize.apply(means2d, conic_opacity, colors, inv_depth_g, background, depths,
                                               rects, touched, (camera.width, camera.height), pair_budget)
    return RenderOutput(image, alpha, inv_depth, radii, means2d)


class TrainingRender:
    """One camera's (or one batch's) render for a training step, with its backward at hand and no
    autograd graph (see :func:`render_for_training`). ``output`` holds plain tensors;
    :meth:`backward` fills ``output.means2d.grad`` and returns the raw parameters' gradients."""

    def __init__(self, output: RenderOutput, params: tuple, camera_data: torch.Tensor, settings: tuple,
                 projection: tuple, background: torch.Tensor, state: tuple, size: tuple[int, int],
                 pairs: tuple[torch.Tensor, int] | None = None):
        """``projection``: (means2d, conic_opacity, colors, inv_depths, radii), what the backward
        reads of the projection's outputs; ``state`` and ``pairs`` as :func:`_rasterize_forward`
        returns them."""
        self.output = output
        self._saved = (params, camera_data, settings, projection, background, state, size, pairs)

    def backward(self, grad_image: torch.Tensor, sh_rest_step: FusedAdamStep | None = None,
                 parameters: bool = True) -> list[torch.Tensor | None]:
        """Gradients of (means, log_scales, quaternions, opacity_logits, sh_dc, sh_rest) from
        d loss / d image ([3, H, W], or [V, 3, H, W] for a batch: the gradients are summed over
        its views); call it once. ``output.means2d.grad`` is always filled. With
        ``sh_rest_step``, the rendered ``sh_rest`` takes that Adam step on the GPU instead (its
        gradient is returned as None), unless the render outgrew its pair budget (then nothing
        moves, and the caller, which renders again, undoes the step's count). With
        ``parameters=False`` the projection's backward is left out: six Nones."""
        params, camera_data, settings, projection, background, state, size, pairs = self._saved
        if sh_rest_step is not None and sh_rest_step.param.data_ptr() != params[5].data_ptr():
            raise ValueError("the fused SH step's parameter is not the sh_rest tensor that was rendered")
        means2d, conic_opacity, colors, inv_depths, radii = projection
        incoming = _rasterize_backward(means2d, conic_opacity, colors, inv_depths, background, state, size,
                                       grad_image)
        self.output.means2d.grad = incoming[0]
        if not parameters:
            if sh_rest_step is not None:
                raise ValueError("a fused SH step needs the parameters' backward (parameters=True)")
            return [None] * len(params)
        return _project_backward(params, camera_data, radii, settings, incoming, sh_rest_step, pairs)


def render_for_training(gaussians: Gaussians, camera: Camera | list[Camera], background: torch.Tensor,
                        sh_degree: int, antialiasing: bool = False,
                        pair_budget: PairBudget | None = None,
                        camera_data: torch.Tensor | None = None,
                        canvas: tuple[int, int] | None = None) -> TrainingRender:
    """``render(gaussians, camera, ...)`` on this backend without autograd: the same kernels and
    results, with the backward called explicitly (``TrainingRender.backward``). Training spends
    ~1 ms of host time a step in autograd's engine otherwise; the loss's gradient w.r.t. the
    image is all the backward needs. The inverse-depth and alpha outputs get no gradient.
    ``camera`` may be a list of cameras, of any image sizes: a batch in one set of launches,
    with [V, ...] outputs as ``render`` gives for a list, drawn on a **canvas** of
    :func:`rasterizer.camera.canvas_size` (the largest width and height; the cameras' own size
    when they share one). View b's image is the top-left ``width x height`` corner of
    ``output.image[b]``, its pixels those of rendering it alone (each camera block holds its
    tile grid, so a view's Gaussians reach only its own tiles); the rest of the canvas is not
    part of the image and must get a zero gradient (the canvas loss,
    ``trainer.cuda.fused_photometric_loss_on_canvas``, gives it one). Real captures often have a
    size per photo (COLMAP's undistortion crops each: beer has 38 sizes among 71 photos); the
    canvas costs the pixels outside the views (at most 6 % on beer) and saves a set of launches
    per image size, which a host-bound step pays for.

    ``camera_data``: the kernels read the camera block(s) from this tensor instead of
    :func:`camera_block`'s (cached) one: a fixed buffer that a CUDA graph's caller fills before
    each replay. It must hold ``camera``'s block(s), which still give the image size.
    ``canvas``: (width, height) of the canvas a list of cameras is drawn on, when larger than
    theirs (a graph that serves views of every size of a scene draws each on the largest)."""
    params = _raw_parameters(gaussians)
    device = gaussians.device
    background = background.to(device=device, dtype=torch.float32).contiguous()
    if isinstance(camera, Camera):
        size = (camera.width, camera.height)
        camera_data = camera_block(camera, device) if camera_data is None else camera_data
    else:
        size = canvas_size(camera)
        if canvas is not None:
            if canvas[0] < size[0] or canvas[1] < size[1]:
                raise ValueError(f"a canvas of {canvas[0]}x{canvas[1]} cannot hold a {size[0]}x{size[1]} image")
            size = (int(canvas[0]), int(canvas[1]))
        camera_data = camera_blocks(list(camera), device) if camera_data is None else camera_data
    settings = _settings(sh_degree, 1.0, antialiasing)
    with torch.no_grad():
        projection = _project_forward(params, camera_data, settings)
        means2d, conic_opacity, colors, inv_depths, depths, radii, rects, touched = projection
        image, alpha, inv_depth, state, pairs = _rasterize_forward(means2d, conic_opacity, colors, inv_depths,
                                                                   background, depths, rects, touched, size,
                                                                   pair_budget)
    output = RenderOutput(image, alpha, inv_depth, radii, means2d)
    # Depths, tile rectangles and tile counts (24 bytes a Gaussian) are not kept for the backward,
    # the step's memory peak.
    kept = (means2d, conic_opacity, colors, inv_depths, radii)
    return TrainingRender(output, params, camera_data, settings, kept, background, state, size, pairs)
