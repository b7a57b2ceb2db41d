"""The viewer's camera path editor: keyframes taken from the current view, reordered, previewed
(played in the render window in real time) and saved to / loaded from a camera_path.json
(``rasterizer/camera_paths.py`` has the interpolation and the file format).

A thin layer over :class:`~rasterizer.camera_paths.CameraPath` and :class:`ViewerState`, without
GL or Dear PyGui, so that the panel section (``path_panel.py``) only forwards clicks here.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from rasterizer.camera_paths import PATH_KINDS, CameraPath, Keyframe, generate_path, load_camera_path, save_camera_path

from ..state import ViewerState

__all__ = ["PathEditor"]

CURVE_SAMPLES_PER_KEYFRAME = 24   # points per transition when the path is drawn over the view


class PathEditor:
    """Keyframes for ``state``'s view, a selection, and the preview player.

    Attributes:
        path: the keyframes, duration (s), frame rate and loop flag.
        selected: index of the selected keyframe, or None.
        playing: the preview is running; ``position`` (0..1) is how far it got.
        show_path: draw the path over the view.
        version: bumped on every change of the path (the overlay redraws on change).
    """

    def __init__(self, state: ViewerState, seconds: float = 4.0, fps: float = 30.0) -> None:
        self.state = state
        self.path = CameraPath([], seconds, fps)
        self.selected: int | None = None
        self.playing = False
        self.position = 0.0
        self.show_path = True
        self.version = 0
        self._resume_pose: tuple[torch.Tensor, float] | None = None

    # ----- keyframes -------------------------------------------------------------------------------
    @property
    def keyframes(self) -> list[Keyframe]:
        return self.path.keyframes

    def _changed(self) -> None:
        self.version += 1

    def add_current(self) -> int:
        """Add the current view after the selected keyframe (else at the end); selects it."""
        keyframe = Keyframe(self.state.world_to_camera, self.state.fov_y)
        index = len(self.keyframes) if self.selected is None else self.selected + 1
        self.keyframes.insert(index, keyframe)
        self.selected = index
        self._changed()
        return index

    def remove_selected(self) -> None:
        if self.selected is None or not self.keyframes:
            return
        del self.keyframes[self.selected]
        self.selected = min(self.selected, len(self.keyframes) - 1) if self.keyframes else None
        self._changed()

    def move_selected(self, offset: int) -> None:
        """Move the selected keyframe ``offset`` places (-1: earlier, +1: later)."""
        if self.selected is None:
            return
        target = self.selected + offset
        if 0 <= target < len(self.keyframes):
            frames = self.keyframes
            frames[self.selected], frames[target] = frames[target], frames[self.selected]
            self.selected = target
            self._changed()

    def replace_selected(self) -> None:
        """Set the selected keyframe to the current view."""
        if self.selected is not None:
            self.keyframes[self.selected] = Keyframe(self.state.world_to_camera, self.state.fov_y)
            self._changed()

    def select(self, index: int | None) -> None:
        self.selected = None if index is None or not self.keyframes else min(max(int(index), 0), len(self.keyframes) - 1)

    def go_to_selected(self) -> None:
        """Put the view at the selected keyframe."""
        if self.selected is not None:
            self._show(self.keyframes[self.selected])

    def clear(self) -> None:
        self.path.keyframes = []
        self.selected = None
        self.stop()
        self._changed()

    def set_timing(self, seconds: float | None = None, fps: float | None = None, loop: bool | None = None) -> None:
        if seconds is not None:
            self.path.seconds = min(max(float(seconds), 0.1), 3600.0)
        if fps is not None:
            self.path.fps = min(max(float(fps), 1.0), 240.0)
        if loop is not None:
            self.path.loop = bool(loop)
        self._changed()

    def generate(self, kind: str) -> None:
        """Replace the keyframes with a generated ``kind`` path (``PATH_KINDS``) from the input
        cameras (turning around the state's pivot when the cameras do not tell)."""
        if kind not in PATH_KINDS:
            raise ValueError(f"camera path kind must be one of {PATH_KINDS}, got {kind!r}")
        generated = generate_path(kind, self.state.input_cameras, self.path.seconds, self.path.fps,
                                  target=self.state.pivot)
        self.path.keyframes, self.path.loop = generated.keyframes, generated.loop
        self.selected = 0
        self._changed()

    # ----- files -----------------------------------------------------------------------------------
    def save(self, file: str | os.PathLike) -> Path:
        """Write the path for the current rendering size; returns the file."""
        if not self.keyframes:
            raise ValueError("the camera path has no keyframes yet (add the current view first)")
        save_camera_path(file, self.path, self.state.width, self.state.height)
        return Path(file)

    def load(self, file: str | os.PathLike) -> int:
        """Read a camera_path.json (ours or nerfstudio's); returns the number of keyframes."""
        loaded = load_camera_path(file)
        self.path = CameraPath(loaded.keyframes, loaded.seconds, loaded.fps, loaded.loop)
        self.selected = 0
        self.stop()
        self._changed()
        return len(self.keyframes)

    # ----- preview ----------------------------------------------------------------------------------
    def play(self) -> None:
        """Start the preview from the beginning (remembering the view to come back to)."""
        if not self.keyframes:
            return
        if not self.playing:
            self._resume_pose = (self.state.world_to_camera.clone(), self.state.fov_y)
        self.playing, self.position = True, 0.0
        self._show(self.path.at(0.0))

    def stop(self, restore: bool = False) -> None:
        """Stop the preview; ``restore`` puts the view back where it was before playing."""
        if self.playing and restore and self._resume_pose is not None:
            pose, fov = self._resume_pose
            self.state.update(fov_y=fov)
            self.state.set_pose(pose)
        self.playing = False
        self._resume_pose = None

    def advance(self, seconds: float) -> None:
        """Move the preview ``seconds`` on (real time); a looping path starts over, another stops
        at its end."""
        if not self.playing:
            return
        self.position += seconds / max(self.path.seconds, 1e-6)
        if self.position >= 1.0:
            if self.path.loop:
                self.position %= 1.0
            else:
                self.position = 1.0
                self.playing = False
        self._show(self.path.at(self.position))

    def scrub(self, fraction: float) -> None:
        """Show the pose ``fraction`` (0..1) of the way through the path."""
        if self.keyframes:
            self.position = min(max(float(fraction), 0.0), 1.0)
            self._show(self.path.at(self.position))

    def _show(self, keyframe: Keyframe) -> None:
        self.state.update(fov_y=keyframe.fov_y)
        self.state.set_pose(keyframe.world_to_camera)

    # ----- drawing ----------------------------------------------------------------------------------
    def curve(self) -> np.ndarray:
        """World points along the path, [N, 3] float64 (for the overlay)."""
        if len(self.keyframes) < 2:
            return np.stack([k.center.numpy() for k in self.keyframes]) if self.keyframes else np.zeros((0, 3))
        count = CURVE_SAMPLES_PER_KEYFRAME * len(self.keyframes) + 1
        frames = CameraPath(self.keyframes, loop=self.path.loop).sample(count)
        points = [f.center.numpy() for f in frames]
        if self.path.loop:
            points.append(points[0])
        return np.stack(points)
