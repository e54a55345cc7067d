"""Looking at a film without playing it: a contact sheet (a frame per scene, captioned) and a poster."""

from __future__ import annotations

import io
import math
import textwrap
import threading
from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

from farm.folder.layout import atomic_write

CELL = 256  # contact sheet picture side, pixels
FONT_FILES = ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


def font(size: int) -> ImageFont.ImageFont:
    for name in FONT_FILES:
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default(size=size)


def png_bytes(image: Image.Image, compress_level: int = 6) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


class ContactSheet:
    """One picture per scene in a grid, each captioned "N. prompt"; scenes are added as they finish."""

    def __init__(self, prompts: Sequence[str]) -> None:
        self.prompts = list(prompts)
        n = len(self.prompts)
        self.columns = math.ceil(math.sqrt(n))
        rows = math.ceil(n / self.columns)
        self.font = font(14)
        self.line_height, self.lines, self.pad = 18, 3, 8
        self.cell = (CELL + 2 * self.pad, CELL + 2 * self.pad + self.lines * self.line_height)
        self.image = Image.new("RGB", (self.columns * self.cell[0], rows * self.cell[1]), (18, 18, 18))
        self.lock = threading.Lock()

    def add(self, k: int, frame: Path) -> None:
        with Image.open(frame) as image:
            picture = image.convert("RGB").resize((CELL, CELL), Image.LANCZOS)
        x = (k % self.columns) * self.cell[0] + self.pad
        y = (k // self.columns) * self.cell[1] + self.pad
        lines = textwrap.wrap(f"{k + 1}. {' '.join(self.prompts[k].split())}", width=34) or [f"{k + 1}."]
        if len(lines) > self.lines:
            lines = lines[: self.lines - 1] + [lines[self.lines - 1][:31] + "..."]
        with self.lock:
            self.image.paste(picture, (x, y))
            draw = ImageDraw.Draw(self.image)
            for i, line in enumerate(lines):
                draw.text((x, y + CELL + 4 + i * self.line_height), line, fill=(235, 235, 235), font=self.font)

    def save(self, out: Path) -> Path:
        with self.lock:
            atomic_write(out, png_bytes(self.image, compress_level=1))
        return out


def poster(frame: Path, title: str, out: Path, side: int = 512) -> Path:
    """The film's middle frame, enlarged, with its title along the bottom."""
    with Image.open(frame) as image:
        picture = image.convert("RGB").resize((side, side), Image.LANCZOS)
    draw = ImageDraw.Draw(picture)
    title_font = font(max(16, side // 14))
    lines = textwrap.wrap(title, width=22)[:3]
    line_height = round(title_font.size * 1.25)
    y = side - len(lines) * line_height - side // 20
    draw.rectangle((0, y - side // 40, side, side), fill=(0, 0, 0))
    for i, line in enumerate(lines):
        width = draw.textlength(line, font=title_font)
        draw.text(((side - width) / 2, y + i * line_height), line, fill=(255, 255, 255), font=title_font)
    atomic_write(out, png_bytes(picture))
    return out
