"""Scene loading: COLMAP, NeRF-synthetic and instant-ngp/nerfstudio ``transforms.json`` scenes.

Public API::

    from trainer.scene import load_scene, Scene, View, view_image_float
    scene = load_scene("data/garden", resolution=-1, eval=True)
    for view in scene.train_views:
        image = view_image_float(scene.images.get(view.index))   # float32 [3, H, W]
"""

from .colmap import UnsupportedCameraModelError
from .images import ImageCache, ImageSource, decode_image, view_image_float
from .resolution import ResolutionRule
from .scene import Scene, View, detect_scene_kind, load_cameras, load_scene, random_point_cloud, scene_extent
from .undistort import Distortion, undistort_image

__all__ = [
    "load_scene", "load_cameras", "Scene", "View", "view_image_float", "ImageCache", "ImageSource",
    "decode_image", "ResolutionRule", "UnsupportedCameraModelError", "detect_scene_kind",
    "random_point_cloud", "scene_extent", "Distortion", "undistort_image",
]
