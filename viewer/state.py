"""The viewer's state: one plain object that the control panel edits and the render loop reads.

Nothing here touches GL, GLFW or Dear PyGui, so every rule (ranges, snapping, which changes
need a re-sort) is testable on its own. Poses are 4x4 float64 world-to-camera matrices in
OpenCV axes, as :class:`rasterizer.Camera`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from rasterizer.camera import Camera, focal_to_fov, fov_to_focal

from .navigation.controls import closest_camera, fps_step

__all__ = ["RENDER_MODES", "NAVIGATION_MODES", "BACKENDS", "ViewerState"]

BACKENDS = ("cuda", "gl", "gl-compute")
RENDER_MODES = ("splats", "ellipsoids", "initial_points", "depth")
NAVIGATION_MODES = ("fps", "trackball", "orbit")
SCALING_RANGE = (0.001, 1.0)  # SIBR's slider


@dataclass
class ViewerState:
    """Everything the user can change, plus the current view.

    Attributes:
        width, height: rendering size in pixels.
        fov_y: vertical field of view in radians (the horizontal one follows the aspect).
        world_to_camera: current pose, 4x4 float64.
        input_cameras: the dataset's cameras (for snapping and the initial view).
        render_mode: one of ``RENDER_MODES``; backend: one of ``available_backends`` (``BACKENDS``).
        scaling_modifier: in ``SCALING_RANGE``; sh_degree: 0..max_sh_degree.
        antialiasing, fast_culling, vsync: toggles; background: RGB in [0, 1].
        navigation: one of ``NAVIGATION_MODES``; speed (world units/s), rotation_speed (rad/s).
        screenshot_path: set to ask the render loop for a screenshot (it clears it).
        remote_train, remote_keep_alive, remote_local_rendering: with ``--connect``, the
            network viewer's Train and Keep-alive flags, and rendering snapshots locally.
    """

    width: int
    height: int
    fov_y: float
    world_to_camera: torch.Tensor
    max_sh_degree: int = 3
    input_cameras: Sequence[Camera] = ()
    backend: str = "gl"
    available_backends: tuple[str, ...] = ("gl",)
    render_mode: str = "splats"
    scaling_modifier: float = 1.0
    sh_degree: int = 3
    antialiasing: bool = False
    fast_culling: bool = True
    vsync: bool = False
    background: tuple[float, float, float] = (0.0, 0.0, 0.0)
    navigation: str = "fps"
    speed: float = 1.0
    rotation_speed: float = 1.0
    screenshot_path: str | None = None
    remote_train: bool = True
    remote_keep_alive: bool = True
    remote_local_rendering: bool = True
    version: int = field(default=0, compare=False)  # bumped on every change the image depends on

    @classmethod
    def from_input_camera(cls, cameras: Sequence[Camera], index: int = 0, width: int | None = None,
                          **settings) -> "ViewerState":
        """Start at input camera ``index``. The default size follows SIBR: width
        min(1200, that camera's width), height keeping its aspect."""
        camera = cameras[index]
        width = width or min(1200, camera.width)
        height = max(1, round(width * camera.height / camera.width))
        return cls(width, height, camera.fov_y, camera.world_to_camera.clone(),
                   input_cameras=list(cameras), **settings)

    # ----- the view ---------------------------------------------------------------------------
    def camera(self) -> Camera:
        """The camera to render: centred principal point, square pixels at ``fov_y``."""
        fy = fov_to_focal(self.fov_y, self.height)
        return Camera(self.width, self.height, fy, fy, self.width / 2.0, self.height / 2.0,
                      self.world_to_camera)

    @property
    def fov_x(self) -> float:
        return focal_to_fov(fov_to_focal(self.fov_y, self.height), self.width)

    def move(self, pressed: Sequence[str], seconds: float) -> bool:
        """Apply FPS keys held for ``seconds``; True if the pose changed."""
        pose = fps_step(self.world_to_camera, pressed, seconds, self.speed, self.rotation_speed)
        if torch.equal(pose, self.world_to_camera):
            return False
        self.set_pose(pose)
        return True

    def set_pose(self, world_to_camera: torch.Tensor) -> None:
        self.world_to_camera = torch.as_tensor(world_to_camera, dtype=torch.float64).clone()
        self.version += 1

    def snap_to(self, index: int) -> None:
        """Take input camera ``index``'s exact pose (and its vertical field of view)."""
        if not 0 <= index < len(self.input_cameras):
            raise IndexError(f"input camera {index} does not exist (there are {len(self.input_cameras)})")
        camera = self.input_cameras[index]
        self.fov_y = camera.fov_y
        self.set_pose(camera.world_to_camera)

    def snap_to_closest(self) -> int:
        index = closest_camera(self.world_to_camera, self.input_cameras)
        self.snap_to(index)
        return index

    def step_camera(self, offset: int) -> int:
        """Next/previous input camera after the closest one (wraps around)."""
        index = (closest_camera(self.world_to_camera, self.input_cameras) + offset) % len(self.input_cameras)
        self.snap_to(index)
        return index

    # ----- settings ---------------------------------------------------------------------------
    def update(self, **changes) -> None:
        """Set settings by name with their rules (ranges, known modes); bumps ``version``."""
        for name, value in changes.items():
            if name == "render_mode" and value not in RENDER_MODES:
                raise ValueError(f"render mode must be one of {RENDER_MODES}, got {value!r}")
            if name == "backend" and value not in self.available_backends:
                raise ValueError(f"backend must be one of {self.available_backends}, got {value!r}")
            if name == "navigation" and value not in NAVIGATION_MODES:
                raise ValueError(f"navigation must be one of {NAVIGATION_MODES}, got {value!r}")
            if name == "scaling_modifier":
                value = min(max(float(value), SCALING_RANGE[0]), SCALING_RANGE[1])
            if name == "sh_degree":
                value = min(max(int(value), 0), self.max_sh_degree)
            if name == "background":
                value = tuple(min(max(float(v), 0.0), 1.0) for v in value)
            if not hasattr(self, name) or name in ("version", "world_to_camera", "input_cameras",
                                                   "available_backends"):
                raise AttributeError(f"ViewerState has no setting {name!r}")
            setattr(self, name, value)
        self.version += 1
