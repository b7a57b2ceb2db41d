"""The training section of the control panel: a thin Dear PyGui layer over a TrainingSession.

Buttons call the session's commands (start/pause, single step, save now); texts show its
published :class:`~viewer.live.session.TrainingStats`. Both run in the viewer's main thread
(DPG callbacks fire inside ``render_dearpygui_frame``); the session does the thread work.
Widget tags start with ``train_`` (tests fire them by tag).
"""

from __future__ import annotations

import dearpygui.dearpygui as dpg

from .session import TrainingSession, TrainingStats

__all__ = ["TrainingSection", "toggle_label", "stats_lines"]

_TEXTS = ("train_status", "train_iteration", "train_loss", "train_psnr", "train_count", "train_rate",
          "train_message")
_FINISHED = ("completed", "interrupted", "out_of_memory", "error")


def toggle_label(paused: bool, iteration: int) -> str:
    """The start/pause button's label: what pressing it does (``iteration``: completed ones)."""
    if not paused:
        return "Pause"
    return "Start" if iteration == 0 else "Resume"


NOT_YET = "\u2014"   # an em dash: no value before the first iteration


def stats_lines(stats: TrainingStats) -> dict[str, str]:
    """Widget tag -> text for ``stats`` (loss: the running L1/SSIM loss; PSNR in dB); loss, PSNR
    and steps/s show a dash until the first iteration has run."""
    started = stats.iteration > 0
    return {
        "train_status": f"training: {stats.status}",
        "train_iteration": f"iteration: {stats.iteration:,} / {stats.total:,}",
        "train_loss": f"loss: {stats.loss:.6f}" if started else f"loss: {NOT_YET}",
        "train_psnr": f"PSNR: {stats.psnr:.2f} dB" if started else f"PSNR: {NOT_YET}",
        "train_count": f"Gaussians (training): {stats.gaussians:,}",
        "train_rate": f"steps/s: {stats.steps_per_second:.1f}" if started else f"steps/s: {NOT_YET}",
        "train_message": stats.message,
    }


class TrainingSection:
    """Widgets for ``session``; pass it to ``ControlPanel(sections=[...])``."""

    def __init__(self, session: TrainingSession):
        self.session = session

    def build(self) -> None:
        dpg.add_text("Training", color=(255, 210, 120))
        for tag in _TEXTS:
            dpg.add_text("", tag=tag, wrap=0)
        with dpg.group(horizontal=True):
            dpg.add_button(label="Start", tag="train_toggle", callback=self._on_toggle)
            dpg.add_button(label="Step", tag="train_step", callback=self._on_step)
            dpg.add_button(label="Save now", tag="train_save", callback=self._on_save)
        self.update()

    def update(self) -> None:
        stats = self.session.stats()
        for tag, text in stats_lines(stats).items():
            dpg.set_value(tag, text)
        dpg.set_item_label("train_toggle", toggle_label(self.session.paused, stats.iteration))
        finished = stats.status in _FINISHED
        for tag in ("train_toggle", "train_step"):
            dpg.configure_item(tag, enabled=not finished)

    # ----- callbacks (main thread) -----------------------------------------------------------------
    def _on_toggle(self, sender=None, app_data=None, user_data=None) -> None:
        # The command state, not the published status: that one follows at the next boundary.
        if self.session.paused:
            self.session.resume()
        else:
            self.session.pause()

    def _on_step(self, sender=None, app_data=None, user_data=None) -> None:
        self.session.step()

    def _on_save(self, sender=None, app_data=None, user_data=None) -> None:
        # The message line says which iteration was written, and where (or why not).
        self.session.save_now()
