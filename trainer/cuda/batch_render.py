"""A training render of a batch of views of any image sizes on one GPU.

:func:`rasterizer.cuda.render_for_training` renders one camera, or cameras of one image size,
without autograd. Real captures often have a size per photo (COLMAP's undistortion crops each
one: beer has 38 sizes among 71 photos), and rendering such a batch size by size repeats the
projection and its backward for every size. :class:`BatchRender` uses the backend's stage
functions instead:

* one projection launch for every view (each camera block holds its own tile grid);
* one blending launch set per image size, on that size's rows of the projection;
* one projection backward, which sums every view's gradients.

The results are those of rendering each size on its own: the same kernels on the same rows.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from rasterizer.camera import Camera
from rasterizer.gaussians import Gaussians
from rasterizer.render import RenderOutput
from trainer.batching import put_views, same_size_groups, select_views

__all__ = ["BatchRender"]


class BatchRender:
    """The forward of a batch (see the module docstring). ``groups[g]`` are the positions of the
    cameras of one image size and ``outputs[g]`` their render (``image`` [V_g, 3, H, W],
    ``radii`` [V_g, N], ``means2d`` [V_g, N, 2]); :meth:`backward` fills each ``means2d.grad``."""

    def __init__(self, gaussians: Gaussians, cameras: Sequence[Camera], background: Tensor, sh_degree: int,
                 antialiasing: bool = False, pair_budget=None):
        from rasterizer.cuda import _project_forward, _rasterize_forward, _raw_parameters, _settings, camera_blocks  # noqa: PLC0415

        self._params = _raw_parameters(gaussians)
        device = gaussians.device
        self._background = background.to(device=device, dtype=torch.float32).contiguous()
        self._camera_data = camera_blocks(list(cameras), device)
        self._settings = _settings(sh_degree, 1.0, antialiasing)
        self.groups = same_size_groups(cameras)
        self.outputs: list[RenderOutput] = []
        self._renders = []
        with torch.no_grad():
            self._projection = _project_forward(self._params, self._camera_data, self._settings)
            means2d, conic_opacity, colors, inv_depths, depths, radii, rects, touched = self._projection
            for group in self.groups:
                inputs = [select_views(t, group) for t in (means2d, conic_opacity, colors, inv_depths, depths, rects,
                                                            touched)]
                size = (cameras[group[0]].width, cameras[group[0]].height)
                image, alpha, inv_depth, state = _rasterize_forward(*inputs[:4], self._background, *inputs[4:], size,
                                                                    pair_budget)
                self.outputs.append(RenderOutput(image, alpha, inv_depth, select_views(radii, group), inputs[0]))
                self._renders.append((inputs[:4], state, size))

    def backward(self, grad_images: Sequence[Tensor]) -> list[Tensor]:
        """Gradients of (means, log_scales, quaternions, opacity_logits, sh_dc, sh_rest), summed
        over the views, from d loss / d image of each group (``grad_images[g]`` [V_g, 3, H, W]);
        call it once."""
        from rasterizer.cuda import _project_backward, _rasterize_backward  # noqa: PLC0415

        incoming = None
        if len(self.groups) > 1:  # every view is in one group: each row is written below
            views, n = self._projection[0].shape[:2]
            incoming = [self._projection[0].new_empty(views, n, *width) for width in ((2,), (4,), (3,), ())]
        for group, output, (inputs, state, size), grad_image in zip(self.groups, self.outputs, self._renders,
                                                                    grad_images):
            grads = _rasterize_backward(*inputs, self._background, state, size, grad_image)
            output.means2d.grad = grads[0]
            if incoming is None:
                incoming = grads
            else:
                for target, grad in zip(incoming, grads):
                    put_views(target, group, grad)
        return _project_backward(self._params, self._camera_data, self._projection[5], self._settings, incoming)
