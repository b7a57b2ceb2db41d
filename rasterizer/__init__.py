"""splatview's rasterizer layer: Gaussians, cameras, model files and render backends.

Public API::

    from rasterizer import Camera, Gaussians, render, read_ply, write_ply
    from rasterizer import read_gaussians, write_gaussians   # any format (rasterizer/formats)
"""

from .camera import Camera, focal_to_fov, fov_to_focal, look_at
from .files import FileFormatError, atomic_write
from .formats import read_gaussians, read_gaussians_dropping_non_finite, write_gaussians
from .gaussians import Gaussians
from .ply import PointCloud, read_ply, read_point_cloud, write_ply, write_point_cloud
from .render import RenderOutput, render

__all__ = [
    "Camera", "Gaussians", "RenderOutput", "PointCloud", "FileFormatError",
    "render", "read_ply", "write_ply", "read_point_cloud", "write_point_cloud",
    "focal_to_fov", "fov_to_focal", "look_at", "atomic_write", "read_gaussians", "read_gaussians_dropping_non_finite", "write_gaussians",
]
