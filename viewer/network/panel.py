"""The network viewer's section of the control panel (``splat-view --connect``): the reference
protocol's Train and Keep-alive flags, local rendering (only with splatview's trainer, which
sends snapshots), the connection status and the trainer's statistics. Widget tags are the state
attributes they set (``remote_*``) and ``remote_status``."""

from __future__ import annotations

import dearpygui.dearpygui as dpg

from .view import RemoteView

__all__ = ["RemoteSection"]

_CHECKBOXES = (("remote_train", "Train"), ("remote_keep_alive", "Keep model alive (after training)"),
               ("remote_local_rendering", "Render locally (snapshots from splatview's trainer)"))


class RemoteSection:
    """Widgets for ``view`` (a :class:`RemoteView`); pass it to ``ControlPanel(sections=[...])``."""

    def __init__(self, view: RemoteView):
        self.view = view

    def build(self) -> None:
        state = self.view.app.state
        with dpg.collapsing_header(label="Network viewer", default_open=True, tag="header_remote"):
            for name, label in _CHECKBOXES:
                dpg.add_checkbox(label=label, tag=name, default_value=getattr(state, name),
                                 callback=self._setting(name))
            dpg.add_text("", tag="remote_status", wrap=0)

    def _setting(self, name: str):
        def callback(sender=None, app_data=None, user_data=None):
            self.view.app.state.update(**{name: bool(app_data)})
        return callback

    def update(self) -> None:
        # Local rendering needs the extension (splatview's trainer); graphdeco's never sends it.
        dpg.configure_item("remote_local_rendering", show=self.view.latest.extension is not None)
        lines = self.view.stats_lines()
        dpg.set_value("remote_status", "\n".join(f"{key}: {value}" for key, value in lines.items()))
