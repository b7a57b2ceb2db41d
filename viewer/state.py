"""The viewer's state: one plain object that the control panel edits and the render loop reads.

Nothing here touches GL, GLFW or Dear PyGui, so every rule (ranges, snapping, which changes
need a new image) is testable on its own. Poses are 4x4 float64 world-to-camera matrices in
OpenCV axes, as :class:`rasterizer.Camera`.

Navigation is scaled to the scene: ``scene_scale`` (world units) is the typical distance from
the input cameras to what they look at, ``speed`` is in scene scales per second and
``turn_speed`` in fields of view per second, so a narrow lens turns slowly and a small model is
crossed as quickly as a city block.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch

from rasterizer.camera import Camera, focal_to_fov, fov_to_focal

from .navigation.controls import camera_centre, closest_camera, fps_step, level
from .options import BACKENDS, NAVIGATION_MODES, RENDER_MODES, SCALING_RANGE, UP_AXES

__all__ = ["RENDER_MODES", "NAVIGATION_MODES", "BACKENDS", "UP_AXES", "SCALING_RANGE", "ViewerState",
           "FOV_RANGE_DEGREES", "SPEED_RANGE", "TURN_SPEED_RANGE", "axis_vector"]

FOV_RANGE_DEGREES = (5.0, 120.0)
SPEED_RANGE = (0.01, 5.0)        # scene scales per second
TURN_SPEED_RANGE = (0.05, 3.0)   # fields of view per second
# The settings an image depends on: changing one of them bumps ``version`` (a new render).
IMAGE_SETTINGS = frozenset({"render_mode", "backend", "scaling_modifier", "sh_degree", "antialiasing",
                            "fast_culling", "background", "fov_y"})


def axis_vector(name: str) -> tuple[float, float, float]:
    """``"+y"`` -> (0, 1, 0), ``"-z"`` -> (0, 0, -1), ..."""
    sign = -1.0 if name[0] == "-" else 1.0
    return tuple(sign if axis == name[1] else 0.0 for axis in "xyz")


@dataclass
class ViewerState:
    """Everything the user can change, plus the current view.

    Attributes:
        width, height: rendering size in pixels.
        fov_y: vertical field of view in radians (the horizontal one follows the aspect).
        world_to_camera: current pose, 4x4 float64.
        input_cameras: the dataset's cameras (for snapping and the initial view).
        camera_index: the input camera last snapped to (P, [ ], the panel), or None.
        render_mode: one of ``RENDER_MODES``; backend: one of ``available_backends`` (``BACKENDS``).
        scaling_modifier: in ``SCALING_RANGE``; sh_degree: 0..max_sh_degree.
        antialiasing, fast_culling, vsync: toggles; background: RGB in [0, 1].
        navigation: one of ``NAVIGATION_MODES``; speed: scene scales per second (keys, wheel);
            turn_speed: fields of view per second (keys).
        up: one of ``UP_AXES`` (world up for orbit, look-around and levelling); auto_up: the
            input cameras' up direction (what ``"auto"`` means).
        pivot: the world point orbit and trackball turn around (a double click picks it).
        scene_scale: world units that navigation speeds are relative to.
        screenshot_pending: set to ask the render loop for a screenshot (it clears it);
            screenshot_size: (width, height) of screenshots, None for the rendering size;
            screenshot_folder: where they go.
        message: the last thing the viewer reported (e.g. where a screenshot went), for the panel.
        shows_remote_images: the window shows a trainer's images (``--connect``), not a local
            render: the local render settings do not apply.
        remote_train, remote_keep_alive, remote_local_rendering: with ``--connect``, the
            network viewer's Train and Keep-alive flags, and rendering snapshots locally.
    """

    width: int
    height: int
    fov_y: float
    world_to_camera: torch.Tensor
    max_sh_degree: int = 3
    input_cameras: Sequence[Camera] = ()
    camera_index: int | None = None
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
    speed: float = 0.5
    turn_speed: float = 0.5
    up: str = "auto"
    auto_up: tuple[float, float, float] = (0.0, -1.0, 0.0)
    pivot: tuple[float, float, float] = (0.0, 0.0, 0.0)
    scene_scale: float = 1.0
    screenshot_pending: bool = False
    screenshot_size: tuple[int, int] | None = None
    screenshot_folder: str = "."
    message: str = ""
    shows_remote_images: bool = False
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
                   input_cameras=list(cameras), camera_index=index, **settings)

    # ----- the view ---------------------------------------------------------------------------
    def camera(self, width: int | None = None, height: int | None = None) -> Camera:
        """The camera to render: centred principal point, square pixels at ``fov_y``; at the
        rendering size unless another is given (screenshots, reduced-resolution frames)."""
        width, height = width or self.width, height or self.height
        fy = fov_to_focal(self.fov_y, height)
        return Camera(width, height, fy, fy, width / 2.0, height / 2.0, self.world_to_camera)

    @property
    def fov_x(self) -> float:
        return focal_to_fov(fov_to_focal(self.fov_y, self.height), self.width)

    def up_vector(self) -> torch.Tensor:
        """World up as a unit float64 [3] (``up``, or the cameras' own for ``"auto"``)."""
        vector = torch.tensor(self.auto_up if self.up == "auto" else axis_vector(self.up), dtype=torch.float64)
        return vector / vector.norm()

    @property
    def move_speed(self) -> float:
        """World units per second for the movement keys."""
        return self.speed * self.scene_scale

    @property
    def turn_rate(self) -> float:
        """Radians per second for the turning keys."""
        return self.turn_speed * self.fov_y

    def move(self, pressed: Sequence[str], seconds: float) -> bool:
        """Apply FPS keys held for ``seconds``; True if the pose changed. In orbit and trackball
        modes the pivot travels with the camera, so that it stays where the camera looks."""
        pose = fps_step(self.world_to_camera, pressed, seconds, self.move_speed, self.turn_rate)
        if torch.equal(pose, self.world_to_camera):
            return False
        if self.navigation != "fps":
            moved = camera_centre(pose) - camera_centre(self.world_to_camera)
            self.pivot = tuple(float(v) for v in torch.tensor(self.pivot, dtype=torch.float64) + moved)
        self.set_pose(pose)
        return True

    def set_pose(self, world_to_camera: torch.Tensor) -> None:
        self.world_to_camera = torch.as_tensor(world_to_camera, dtype=torch.float64).clone()
        self.version += 1

    def set_scene(self, pivot: Sequence[float], scale: float, auto_up: Sequence[float]) -> None:
        """Where navigation turns (``pivot``), its distance scale and the cameras' up direction."""
        self.pivot = tuple(float(v) for v in pivot)
        self.scene_scale = max(float(scale), 1e-9)
        self.auto_up = tuple(float(v) for v in auto_up)

    def resize(self, width: int, height: int) -> bool:
        """Render at ``width`` x ``height`` (the field of view stays vertical); True if changed."""
        width, height = max(1, int(width)), max(1, int(height))
        if (width, height) == (self.width, self.height):
            return False
        self.width, self.height = width, height
        self.version += 1
        return True

    def snap_to(self, index: int) -> None:
        """Take input camera ``index``'s exact pose (and its vertical field of view)."""
        if not 0 <= index < len(self.input_cameras):
            raise IndexError(f"input camera {index} does not exist (there are {len(self.input_cameras)})")
        camera = self.input_cameras[index]
        self.fov_y = camera.fov_y
        self.camera_index = index
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

    def next_navigation(self) -> str:
        """Switch to the next navigation mode (key N); returns it."""
        self.navigation = NAVIGATION_MODES[(NAVIGATION_MODES.index(self.navigation) + 1) % len(NAVIGATION_MODES)]
        return self.navigation

    # ----- settings ---------------------------------------------------------------------------
    def update(self, **changes) -> None:
        """Set settings by name with their rules (ranges, known modes); bumps ``version`` when the
        image depends on one that changed. Changing ``up`` levels the camera to it."""
        image_changed = False
        for name, value in changes.items():
            if name == "render_mode" and value not in RENDER_MODES:
                raise ValueError(f"render mode must be one of {RENDER_MODES}, got {value!r}")
            if name == "backend" and value not in self.available_backends:
                raise ValueError(f"backend must be one of {self.available_backends}, got {value!r}")
            if name == "navigation" and value not in NAVIGATION_MODES:
                raise ValueError(f"navigation must be one of {NAVIGATION_MODES}, got {value!r}")
            if name == "up" and value not in UP_AXES:
                raise ValueError(f"up must be one of {UP_AXES}, got {value!r}")
            if name == "scaling_modifier":
                value = min(max(float(value), SCALING_RANGE[0]), SCALING_RANGE[1])
            if name == "sh_degree":
                value = min(max(int(value), 0), self.max_sh_degree)
            if name == "background":
                value = tuple(min(max(float(v), 0.0), 1.0) for v in value)
            if name == "fov_y":
                value = min(max(float(value), math.radians(FOV_RANGE_DEGREES[0])), math.radians(FOV_RANGE_DEGREES[1]))
            if name == "speed":
                value = min(max(float(value), SPEED_RANGE[0]), SPEED_RANGE[1])
            if name == "turn_speed":
                value = min(max(float(value), TURN_SPEED_RANGE[0]), TURN_SPEED_RANGE[1])
            if name == "screenshot_size" and value is not None:
                value = (max(1, int(value[0])), max(1, int(value[1])))
            if not hasattr(self, name) or name in ("version", "world_to_camera", "input_cameras",
                                                   "available_backends", "width", "height"):
                raise AttributeError(f"ViewerState has no setting {name!r}")
            if getattr(self, name) == value:
                continue
            setattr(self, name, value)
            image_changed |= name in IMAGE_SETTINGS
            if name == "up":
                self.set_pose(level(self.world_to_camera, self.up_vector()))
        if image_changed:
            self.version += 1
