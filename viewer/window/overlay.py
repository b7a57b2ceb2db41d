"""What the render window draws over the splats, as RGBA images made with Pillow: the key-binding
help, the right-click menu, short messages and the camera path seen from the current view.

Nothing here touches GL: :class:`viewer.window.compositor.Compositor` uploads the images and
blends them over the frame. Text uses Pillow's bundled scalable font, so no system font is
needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["font", "help_image", "Menu", "message_image", "path_image"]

TEXT = (235, 235, 235, 255)
DIM = (160, 170, 180, 255)
PANEL = (20, 22, 26, 215)
HIGHLIGHT = (60, 110, 190, 235)
PATH_COLOUR = (255, 200, 40, 255)
KEYFRAME_COLOUR = (90, 200, 255, 255)
SELECTED_COLOUR = (255, 90, 90, 255)
FONT_SIZE = 15
PADDING = 10


def font(size: int = FONT_SIZE) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _text_width(draw: ImageDraw.ImageDraw, text: str, face) -> int:
    return int(draw.textlength(text, font=face))


def help_image(title: str, rows: Sequence[tuple[str, str]]) -> Image.Image:
    """A box with ``title`` and two columns (keys, meaning)."""
    face, bold = font(), font(FONT_SIZE + 2)
    probe = ImageDraw.Draw(Image.new("RGBA", (1, 1)))
    line = FONT_SIZE + 6
    key_width = max(_text_width(probe, keys, face) for keys, _ in rows) + 18
    width = PADDING * 2 + key_width + max(_text_width(probe, meaning, face) for _, meaning in rows)
    width = max(width, _text_width(probe, title, bold) + 2 * PADDING)
    height = PADDING * 2 + line * (len(rows) + 1) + 4
    image = Image.new("RGBA", (width, height), PANEL)
    draw = ImageDraw.Draw(image)
    draw.text((PADDING, PADDING), title, font=bold, fill=TEXT)
    for row, (keys, meaning) in enumerate(rows, start=1):
        y = PADDING + 4 + row * line
        draw.text((PADDING, y), keys, font=face, fill=(255, 210, 120, 255))
        draw.text((PADDING + key_width, y), meaning, font=face, fill=TEXT)
    return image


@dataclass
class Menu:
    """A right-click menu of ``entries`` (label, hint) opened at window pixel (``x``, ``y``)."""

    entries: Sequence[tuple[str, str]]
    x: int
    y: int
    row_height: int = FONT_SIZE + 10

    def image(self, hover: int | None = None) -> Image.Image:
        face = font()
        probe = ImageDraw.Draw(Image.new("RGBA", (1, 1)))
        label_width = max(_text_width(probe, label, face) for label, _ in self.entries) + 24
        width = PADDING * 2 + label_width + max(_text_width(probe, hint, face) for _, hint in self.entries)
        image = Image.new("RGBA", (width, self.row_height * len(self.entries) + 8), PANEL)
        draw = ImageDraw.Draw(image)
        for row, (label, hint) in enumerate(self.entries):
            top = 4 + row * self.row_height
            if row == hover:
                draw.rectangle((2, top, width - 3, top + self.row_height - 1), fill=HIGHLIGHT)
            draw.text((PADDING, top + 4), label, font=face, fill=TEXT)
            draw.text((PADDING + label_width, top + 4), hint, font=face, fill=DIM)
        return image

    def entry_at(self, x: float, y: float, width: int) -> int | None:
        """The entry under window pixel (``x``, ``y``) for a menu image ``width`` wide, or None."""
        row = int((y - self.y - 4) // self.row_height)
        if self.x <= x < self.x + width and y >= self.y + 4 and 0 <= row < len(self.entries):
            return row
        return None


def message_image(text: str) -> Image.Image:
    """One line of ``text`` on a dark box."""
    face = font()
    probe = ImageDraw.Draw(Image.new("RGBA", (1, 1)))
    image = Image.new("RGBA", (_text_width(probe, text, face) + 2 * PADDING, FONT_SIZE + 2 * PADDING - 2), PANEL)
    ImageDraw.Draw(image).text((PADDING, PADDING - 2), text, font=face, fill=TEXT)
    return image


def path_image(size: tuple[int, int], curve: np.ndarray, keyframes: np.ndarray, selected: int | None,
               playing_at: np.ndarray | None = None) -> Image.Image:
    """The camera path as seen from the current view, ``size`` = (width, height) pixels.

    ``curve``: [N, 3] (x, y, depth) pixel positions of points along the path (depth <= 0: behind
    the camera, where the line is broken); ``keyframes``: [K, 3] likewise, numbered from 1;
    ``selected``: the highlighted keyframe; ``playing_at``: the current preview position.
    """
    image = Image.new("RGBA", size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    run: list[tuple[float, float]] = []
    for x, y, depth in curve:
        if depth > 0 and abs(x) < 4 * size[0] and abs(y) < 4 * size[1]:
            run.append((float(x), float(y)))
            continue
        if len(run) > 1:
            draw.line(run, fill=PATH_COLOUR, width=2)
        run = []
    if len(run) > 1:
        draw.line(run, fill=PATH_COLOUR, width=2)
    face = font(13)
    for number, (x, y, depth) in enumerate(keyframes, start=1):
        if depth <= 0:
            continue
        colour = SELECTED_COLOUR if selected == number - 1 else KEYFRAME_COLOUR
        draw.ellipse((x - 5, y - 5, x + 5, y + 5), outline=colour, width=2)
        draw.text((x + 7, y - 8), str(number), font=face, fill=colour)
    if playing_at is not None and playing_at[2] > 0:
        x, y = playing_at[:2]
        draw.ellipse((x - 4, y - 4, x + 4, y + 4), fill=SELECTED_COLOUR)
    return image
