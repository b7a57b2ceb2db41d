"""The camera path section of the control panel: a thin Dear PyGui layer over a
:class:`~viewer.navigation.path_editor.PathEditor`. Widget tags start with ``path_`` (tests fire
them by tag)."""

from __future__ import annotations

import math

import dearpygui.dearpygui as dpg

from rasterizer.camera_paths import PATH_KINDS

from .path_editor import PathEditor

__all__ = ["CameraPathSection"]


def _one_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


class CameraPathSection:
    """Keyframes, timing, preview, generated paths and the JSON file, for ``editor``."""

    def __init__(self, editor: PathEditor, default_file: str = "camera_path.json") -> None:
        self.editor = editor
        self.default_file = default_file
        self._shown_version = -1
        self.message = ""

    def build(self) -> None:
        editor = self.editor
        with dpg.collapsing_header(label="Camera path", default_open=False, tag="header_path"):
            dpg.add_listbox([], tag="path_keyframes", num_items=5, width=-1, callback=self._on_select)
            with dpg.group(horizontal=True):
                dpg.add_button(label="Add view (Enter)", tag="path_add", callback=self._call(editor.add_current))
                dpg.add_button(label="Replace", tag="path_replace", callback=self._call(editor.replace_selected))
                dpg.add_button(label="Remove", tag="path_remove", callback=self._call(editor.remove_selected))
            with dpg.group(horizontal=True):
                dpg.add_button(label="Earlier", tag="path_up", callback=self._call(lambda: editor.move_selected(-1)))
                dpg.add_button(label="Later", tag="path_down", callback=self._call(lambda: editor.move_selected(1)))
                dpg.add_button(label="Go to", tag="path_goto", callback=self._call(editor.go_to_selected))
                dpg.add_button(label="Clear", tag="path_clear", callback=self._call(editor.clear))
            dpg.add_input_float(label="seconds", tag="path_seconds", default_value=editor.path.seconds, step=0.5,
                                min_value=0.1, min_clamped=True, width=120, callback=self._on_timing)
            dpg.add_input_int(label="fps", tag="path_fps", default_value=int(editor.path.fps), min_value=1,
                              max_value=240, min_clamped=True, max_clamped=True, width=120, callback=self._on_timing)
            dpg.add_checkbox(label="loop", tag="path_loop", default_value=editor.path.loop, callback=self._on_timing)
            with dpg.group(horizontal=True):
                dpg.add_button(label="Play (Space)", tag="path_play", callback=self._on_play)
                dpg.add_checkbox(label="show path", tag="path_show", default_value=editor.show_path,
                                 callback=lambda s, value: setattr(editor, "show_path", bool(value)))
            dpg.add_slider_float(label="position", tag="path_position", min_value=0.0, max_value=1.0,
                                 default_value=0.0, clamped=True, callback=self._on_scrub)
            with dpg.group(horizontal=True):
                dpg.add_combo(PATH_KINDS, tag="path_kind", default_value=PATH_KINDS[0], width=90)
                dpg.add_button(label="Generate from input cameras", tag="path_generate", callback=self._on_generate)
            dpg.add_input_text(label="file", tag="path_file", default_value=self.default_file)
            with dpg.group(horizontal=True):
                dpg.add_button(label="Save", tag="path_save", callback=self._on_save)
                dpg.add_button(label="Load", tag="path_load", callback=self._on_load)
            dpg.add_text("", tag="path_message", wrap=0)

    # ----- per frame ------------------------------------------------------------------------------
    def update(self) -> None:
        editor = self.editor
        if editor.version != self._shown_version:
            self._shown_version = editor.version
            items = [f"{i + 1}: ({', '.join(f'{v:.2f}' for v in k.center.tolist())}) {math.degrees(k.fov_y):.0f} deg"
                     for i, k in enumerate(editor.keyframes)]
            dpg.configure_item("path_keyframes", items=items)
            if editor.selected is not None and items:
                dpg.set_value("path_keyframes", items[editor.selected])
            dpg.set_value("path_seconds", editor.path.seconds)
            dpg.set_value("path_fps", int(round(editor.path.fps)))
            dpg.set_value("path_loop", editor.path.loop)
        dpg.set_item_label("path_play", "Stop (Space)" if editor.playing else "Play (Space)")
        if not dpg.is_item_active("path_position"):
            dpg.set_value("path_position", editor.position)
        summary = f"{len(editor.keyframes)} keyframes, {editor.path.frame_count()} frames"
        dpg.set_value("path_message", f"{summary}\n{self.message}" if self.message else summary)

    # ----- callbacks ------------------------------------------------------------------------------
    def _call(self, action):
        def callback(sender=None, app_data=None, user_data=None):
            action()
        return callback

    def _on_select(self, sender=None, app_data=None, user_data=None) -> None:
        items = dpg.get_item_configuration("path_keyframes")["items"]
        if app_data in items:
            self.editor.select(items.index(app_data))

    def _on_timing(self, sender=None, app_data=None, user_data=None) -> None:
        self.editor.set_timing(seconds=dpg.get_value("path_seconds"), fps=dpg.get_value("path_fps"),
                               loop=dpg.get_value("path_loop"))

    def _on_play(self, sender=None, app_data=None, user_data=None) -> None:
        if self.editor.playing:
            self.editor.stop()
        else:
            self.editor.play()

    def _on_scrub(self, sender=None, app_data=None, user_data=None) -> None:
        self.editor.stop()
        self.editor.scrub(float(app_data))

    def _on_generate(self, sender=None, app_data=None, user_data=None) -> None:
        try:
            self.editor.generate(dpg.get_value("path_kind"))
            self.message = f"generated a {dpg.get_value('path_kind')} path"
        except ValueError as error:
            self.message = f"cannot generate: {_one_line(error)}"

    def _on_save(self, sender=None, app_data=None, user_data=None) -> None:
        file = dpg.get_value("path_file").strip() or self.default_file
        try:
            path = self.editor.save(file)
        except (OSError, ValueError) as error:
            self.message = f"not saved: {_one_line(error)}"
        else:
            self.message = (f"saved {path.resolve()}; video: splat-render -m MODEL --camera-path {path} "
                            f"--video {path.with_suffix('.mp4').name}")

    def _on_load(self, sender=None, app_data=None, user_data=None) -> None:
        file = dpg.get_value("path_file").strip() or self.default_file
        try:
            count = self.editor.load(file)
        except (OSError, ValueError) as error:
            self.message = f"not loaded: {_one_line(error)}"
        else:
            self.message = f"loaded {count} keyframes from {file}"
