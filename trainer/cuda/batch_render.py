"""A training render of a batch of views of any image sizes on one GPU, in one set of launches.

:func:`rasterizer.cuda.render_for_training` renders one camera, or cameras of one image size,
without autograd. Real captures often have a size per photo (COLMAP's undistortion crops each
one: beer has 38 sizes among 71 photos, 690-720 x 1227-1286). :class:`BatchRender` draws such a
batch on one **canvas**, as wide and as tall as the largest view:

* one projection launch for every view (each camera block holds its own tile grid, so each
  view's Gaussians reach only its own tiles);
* one blending launch set over the canvas's tiles for every view: view b's image is the
  top-left ``w_b x h_b`` corner of ``canvas[b]``. Its pixels are those of rendering the view
  alone (the same Gaussians in the same order, tile by tile); the canvas outside it holds
  whatever its tiles' Gaussians give (the background beyond the view's tiles) and is not part of
  the image: the loss (:func:`trainer.cuda.fused_photometric_loss_on_canvas`) ignores it and
  gives it a zero gradient, so it adds nothing to the backward;
* one projection backward, which sums every view's gradients.

The canvas costs the pixels outside the views (at most 6 % on beer) and saves a set of launches
per image size, which is what a host-bound multi-view step pays for.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from rasterizer.camera import Camera
from rasterizer.gaussians import Gaussians
from rasterizer.render import RenderOutput
from trainer.batching import canvas_size

__all__ = ["BatchRender"]


class BatchRender:
    """The forward of a batch (see the module docstring): ``output.image`` is the canvas
    [V, 3, H, W] (view b in its top-left ``cameras[b].width x height`` corner), ``output.radii``
    [V, N] and ``output.means2d`` [V, N, 2] as a batched render gives; :meth:`backward` fills
    ``output.means2d.grad``."""

    def __init__(self, gaussians: Gaussians, cameras: Sequence[Camera], background: Tensor, sh_degree: int,
                 antialiasing: bool = False, pair_budget=None):
        from rasterizer.cuda import _project_forward, _rasterize_forward, _raw_parameters, _settings, camera_blocks  # noqa: PLC0415

        self._params = _raw_parameters(gaussians)
        device = gaussians.device
        self._background = background.to(device=device, dtype=torch.float32).contiguous()
        self._camera_data = camera_blocks(list(cameras), device)
        self._settings = _settings(sh_degree, 1.0, antialiasing)
        self.size = canvas_size(cameras)
        with torch.no_grad():
            self._projection = _project_forward(self._params, self._camera_data, self._settings)
            means2d, conic_opacity, colors, inv_depths, depths, radii, rects, touched = self._projection
            image, alpha, inv_depth, self._state = _rasterize_forward(
                means2d, conic_opacity, colors, inv_depths, self._background, depths, rects, touched, self.size,
                pair_budget)
        self.output = RenderOutput(image, alpha, inv_depth, radii, means2d)

    def backward(self, grad_canvas: Tensor) -> list[Tensor]:
        """Gradients of (means, log_scales, quaternions, opacity_logits, sh_dc, sh_rest), summed
        over the views, from d loss / d canvas ([V, 3, H, W], zero outside the views); call it
        once."""
        from rasterizer.cuda import _project_backward, _rasterize_backward  # noqa: PLC0415

        means2d, conic_opacity, colors, inv_depths = self._projection[:4]
        incoming = _rasterize_backward(means2d, conic_opacity, colors, inv_depths, self._background, self._state,
                                       self.size, grad_canvas)
        self.output.means2d.grad = incoming[0]
        return _project_backward(self._params, self._camera_data, self._projection[5], self._settings, incoming)
