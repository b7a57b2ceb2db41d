"""The fused CUDA training step (render, loss and their backward) replayed as a CUDA graph.

Between two changes of the model's tensors (densification, an opacity reset, a checkpoint) every
training step launches the same ~30 kernels on buffers of the same sizes: only the camera and
the photo differ. Launched one by one from Python they cost more host time than the GPU needs to
run them (on an H200 at 100k Gaussians about 2 ms of host time against 1.5 ms of GPU time,
``bench/profile_train.py``), so the GPU waits. A CUDA graph captured once launches them all in
one call; before each replay the camera block and the photo are copied into the graph's fixed
input buffers. The kernels and their arguments are the eager step's, so a replay gives the
eager step's results, up to the order in which float atomics add.

What a graph bakes in is its **key** (:func:`graph_key`): the parameters' tensors (addresses and
shapes), the image size, the photo's channels, the background tensor, the SH degree, the
antialiasing switch, the loss weight and the pair budget's capacity. A step with another key
captures a new graph, in the memory pool of the one before (which is dropped).

Views of several sizes (COLMAP's undistortion crops each photo: beer has 38 sizes among 71
photos) would change the key at nearly every step. Given the scene's **canvas** (the largest
width and height), every view is drawn in the top-left corner of one canvas-sized image
instead, as a batch of one (``render_for_training``'s canvas, its pixels those of the view alone)
with the canvas loss, and the photo goes into a canvas-sized buffer: one graph for all sizes.

The pair count: the capture reserves the pair budget's room once (``PairBudget.reserve`` queues
a copy of the count to pinned host memory and an external event, both inside the graph); every
replay hands that pending count back to the budget, so the caller's ``budget.overflowed()``
works as for an eager render. A render that overflowed is done again by the caller, which
grows the capacity, so the next replay is of a new capture.

The fused SH step: given a ``FusedAdamStep``, the capture has the projection's backward take
``sh_rest``'s Adam step, as the eager step does (its gradient, the largest, is never stored).
The step's two scalars change at every step, so the capture's step reads them from a device
buffer that each replay's inputs rewrite; its moments' tensors and hyper-parameters are in the
key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from rasterizer.camera import Camera
from rasterizer.cuda import FusedAdamStep, PairBudget, PendingCount, camera_block, render_for_training
from rasterizer.gaussians import Gaussians
from trainer.batching import ints_on
from trainer.cuda import fused_photometric_loss_and_gradient, fused_photometric_loss_on_canvas

__all__ = ["GraphedTrainingStep", "StepResult", "graph_key"]


@dataclass
class StepResult:
    """What a training step gives back: the view's ``means2d_grad`` ([N, 2], pixels) and
    ``radii`` ([N]) for the densification statistics, the loss (a device scalar), its
    statistics ``[1, 4]``, and the six raw parameters' gradients in :class:`Gaussians` field
    order (means, log_scales, quaternions, opacity_logits, sh_dc, sh_rest: None when the step
    took the fused SH step); ``image`` is the
    render (``[3, H, W]``, or ``[1, 3, H', W']`` on a canvas with the view in its top-left
    corner). From a graph these are the graph's own buffers: read them before the next replay."""

    image: torch.Tensor
    means2d_grad: torch.Tensor
    radii: torch.Tensor
    loss: torch.Tensor
    stats: torch.Tensor
    grads: list[torch.Tensor | None]


def graph_key(gaussians: Gaussians, image: tuple, background: torch.Tensor, sh_degree: int, antialiasing: bool,
              lambda_dssim: float, budget: PairBudget, sh_rest_step: FusedAdamStep | None = None) -> tuple:
    """Everything a captured step depends on besides the camera block, the photo's pixels and
    the fused SH step's two scalars; ``image`` is what fixes the render's size (the view's size
    and photo shape, or the canvas and the photos' channels)."""
    tensors = (gaussians.means, gaussians.log_scales, gaussians.quaternions, gaussians.opacity_logits,
               gaussians.sh_dc, gaussians.sh_rest)
    fused = None if sh_rest_step is None else (
        sh_rest_step.param.data_ptr(), sh_rest_step.exp_avg.data_ptr(), sh_rest_step.exp_avg_sq.data_ptr(),
        sh_rest_step.beta1, sh_rest_step.beta2, sh_rest_step.eps)
    return (tuple((t.data_ptr(), tuple(t.shape)) for t in tensors), image, background.data_ptr(), sh_degree,
            bool(antialiasing), float(lambda_dssim), budget.capacity, fused)


def _eager_step(gaussians: Gaussians, camera: Camera, truth: torch.Tensor, background: torch.Tensor,
                sh_degree: int, antialiasing: bool, lambda_dssim: float, budget: PairBudget | None,
                camera_data: torch.Tensor | None = None, canvas: tuple[int, int] | None = None,
                views: torch.Tensor | None = None, sh_rest_step: FusedAdamStep | None = None) -> StepResult:
    """Render, loss and both backwards: the launches that a graph captures. With ``canvas``,
    the view is drawn on a canvas of that size as a batch of one (``camera_data`` [1, 25]) and
    ``views`` is the canvas loss's table of the photo (see ``trainer.cuda.canvas_views``);
    ``sh_rest_step`` is taken by the backward (see ``TrainingRender.backward``)."""
    if canvas is None:
        rendered = render_for_training(gaussians, camera, background, sh_degree, antialiasing, budget,
                                       camera_data=camera_data)
        loss, stats, grad_image = fused_photometric_loss_and_gradient(rendered.output.image, truth, background,
                                                                      lambda_dssim)
    else:
        rendered = render_for_training(gaussians, [camera], background, sh_degree, antialiasing, budget,
                                       camera_data=camera_data, canvas=canvas)
        loss, stats, grad_image = fused_photometric_loss_on_canvas(rendered.output.image, [truth], background,
                                                                   lambda_dssim, views=views)
    grads = rendered.backward(grad_image, sh_rest_step)
    out = rendered.output
    means2d_grad, radii = (out.means2d.grad, out.radii) if canvas is None else (out.means2d.grad[0], out.radii[0])
    return StepResult(out.image, means2d_grad, radii, loss, stats, grads)


@dataclass
class _Capture:
    key: tuple
    graph: torch.cuda.CUDAGraph
    camera_data: torch.Tensor      # input: the camera block, [25] ([1, 25] on a canvas)
    truth: torch.Tensor            # input: the photo, uint8 [H, W, C] (flat, canvas-sized, on a canvas)
    views: torch.Tensor | None     # input on a canvas: the loss's table of the photo, int64 [1, 3]
    adam_scalars: torch.Tensor | None  # input with a fused SH step: its (step_size, bc2 sqrt), float32 [2]
    result: StepResult             # outputs, rewritten by each replay
    pending: list[PendingCount]    # the pair count each replay copies to the host


class GraphedTrainingStep:
    """One camera's training step on the CUDA backend, replayed from a CUDA graph.

    ``run`` takes the step's inputs; the first call with a new :func:`graph_key` captures (the
    step is then launched by the graph's first replay). ``captures`` and ``replays`` count
    both. Needs a pair budget that has seen a count (``budget.capacity > 0``): a capture cannot
    read one back. ``canvas``: the (width, height) every view is drawn on, for a scene whose
    views have several sizes (see the module docstring); None draws each at its own size. One
    device and one thread, like the budget.
    """

    def __init__(self, canvas: tuple[int, int] | None = None) -> None:
        self.canvas = None if canvas is None else (int(canvas[0]), int(canvas[1]))
        self._capture: _Capture | None = None
        # The last graph captured: the next capture shares its memory pool (then it goes), so
        # that the captures of a run reuse one pool instead of leaving one behind each.
        self._pool_owner: torch.cuda.CUDAGraph | None = None
        self._stream: torch.cuda.Stream | None = None
        self._tables: dict[tuple, torch.Tensor] = {}   # canvas: (address, width, height) -> views table
        self.captures = 0
        self.replays = 0

    def release(self) -> None:
        """Drop the captured step's buffers (before the model's tensors change: the graph
        would read the old ones). Its memory pool stays, for the next capture."""
        self._capture = None

    def run(self, gaussians: Gaussians, camera: Camera, truth: torch.Tensor, background: torch.Tensor,
            sh_degree: int, antialiasing: bool, lambda_dssim: float, budget: PairBudget,
            sh_rest_step: FusedAdamStep | None = None) -> StepResult:
        """The step for ``camera`` and its photo ``truth`` (uint8 [H, W, C] on the GPU), as
        :func:`_eager_step` would compute it; ``budget`` gets the step's pending pair count.
        With ``sh_rest_step`` (this step's, from ``CudaAdam.fused_step``), ``sh_rest`` takes
        that Adam step in the backward unless the render overflowed (as an eager step's)."""
        if sh_rest_step is not None and sh_rest_step.param.data_ptr() != gaussians.sh_rest.data_ptr():
            raise ValueError("the fused SH step's parameter is not the sh_rest tensor rendered")
        if budget.capacity <= 0:
            raise ValueError("a graphed step needs a pair budget that has seen a count (capacity > 0)")
        if self.canvas is not None and (camera.width > self.canvas[0] or camera.height > self.canvas[1]):
            raise ValueError(f"a {camera.width}x{camera.height} view does not fit the canvas "
                             f"{self.canvas[0]}x{self.canvas[1]}")
        image = ((camera.width, camera.height, tuple(truth.shape)) if self.canvas is None
                 else (self.canvas, truth.shape[-1]))
        key = graph_key(gaussians, image, background, sh_degree, antialiasing, lambda_dssim, budget, sh_rest_step)
        if self._capture is None or self._capture.key != key:
            self._capture = None
            self._capture = self._record(key, gaussians, camera, truth, background, sh_degree, antialiasing,
                                         lambda_dssim, budget, sh_rest_step)
        capture = self._capture
        self._load_inputs(capture, camera, truth, sh_rest_step)
        capture.graph.replay()
        budget.requeue(capture.pending)
        self.replays += 1
        return capture.result

    def _load_inputs(self, capture: _Capture, camera: Camera, truth: torch.Tensor,
                     sh_rest_step: FusedAdamStep | None) -> None:
        """Copy the step's camera block, photo, fused SH step's scalars and (on a canvas) the
        photo's table into the graph's input buffers (on the stream, before the replay)."""
        capture.camera_data.copy_(camera_block(camera, truth.device).view_as(capture.camera_data))
        if sh_rest_step is not None:
            # Pinned through torch's caching host allocator, which keeps the block until the
            # copy has run: the next step's values cannot overwrite this step's in flight.
            scalars = torch.tensor(sh_rest_step.scalar_values(), dtype=torch.float32, pin_memory=True)
            capture.adam_scalars.copy_(scalars, non_blocking=True)
        if capture.views is None:
            capture.truth.copy_(truth)
            return
        capture.truth[:truth.numel()].copy_(truth.reshape(-1))
        capture.views.copy_(self._table(capture.truth, camera.width, camera.height))

    def _table(self, buffer: torch.Tensor, width: int, height: int) -> torch.Tensor:
        """The canvas loss's table for a ``width`` x ``height`` photo at the start of ``buffer``,
        uploaded once per size."""
        key = (buffer.data_ptr(), width, height)
        table = self._tables.get(key)
        if table is None:
            table = ints_on([[buffer.data_ptr(), width, height]], buffer.device)
            self._tables[key] = table
        return table

    def _record(self, key: tuple, gaussians: Gaussians, camera: Camera, truth: torch.Tensor,
                background: torch.Tensor, sh_degree: int, antialiasing: bool, lambda_dssim: float,
                budget: PairBudget, sh_rest_step: FusedAdamStep | None) -> _Capture:
        """Capture the step into a new graph (nothing runs until a replay)."""
        device = truth.device
        adam_scalars = None
        if sh_rest_step is not None:
            adam_scalars = torch.zeros(2, dtype=torch.float32, device=device)
            sh_rest_step = dataclasses.replace(sh_rest_step, scalars=adam_scalars)
        block = camera_block(camera, device)
        if self.canvas is None:
            camera_data, static_truth, views, truth_in_graph = block.clone(), truth.clone(), None, None
        else:
            camera_data = block.clone()[None]
            width, height = self.canvas
            static_truth = torch.zeros(height * width * truth.shape[-1], dtype=torch.uint8, device=device)
            self._tables.clear()   # tables of a buffer that is gone
            views = self._table(static_truth, camera.width, camera.height).clone()
            static_truth[:truth.numel()].copy_(truth.reshape(-1))
            truth_in_graph = static_truth[:truth.numel()].view(truth.shape)
        if self._stream is None:
            self._stream = torch.cuda.Stream(device)
        # A pool handle of its own would be freed with the graphs that used it; sharing the
        # previous graph's (never replayed again) is what PyTorch supports.
        pool = self._pool_owner.pool() if self._pool_owner is not None else None
        budget.stock_host_buffer()
        if budget.detach_pending():
            raise RuntimeError("a graphed step began with a render's pair count still pending")
        graph = torch.cuda.CUDAGraph()
        # torch.cuda.graph() would synchronise and empty the allocator's cache at every capture;
        # a capture every ~100 steps (each densification) need not. thread_local: another
        # thread's CUDA work (a viewer's renders) goes on during the capture.
        self._stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(self._stream):
            graph.capture_begin(pool=pool, capture_error_mode="thread_local")
            try:
                result = _eager_step(gaussians, camera, static_truth if views is None else truth_in_graph,
                                     background, sh_degree, antialiasing, lambda_dssim, budget,
                                     camera_data=camera_data, canvas=self.canvas, views=views,
                                     sh_rest_step=sh_rest_step)
            except BaseException:
                _end_failed_capture(graph)
                budget.detach_pending()
                raise
            graph.capture_end()
        torch.cuda.current_stream(device).wait_stream(self._stream)
        self._pool_owner = graph
        self.captures += 1
        return _Capture(key, graph, camera_data, static_truth, views, adam_scalars, result, budget.detach_pending())


def _end_failed_capture(graph: torch.cuda.CUDAGraph) -> None:
    """End a capture that an error interrupted (the error, not this, is what the caller sees)."""
    try:
        graph.capture_end()
    except RuntimeError:
        pass
