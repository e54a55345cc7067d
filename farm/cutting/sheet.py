"""Looking at a film without playing it: a contact sheet (a frame per scene, captioned) and a poster."""

from __future__ import annotations

import io
import math
import textwrap
from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

from farm.cutting.layout import atomic_write

CELL = 256  # contact sheet picture side, pixels
FONT_FILES = ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


def font(size: int) -> ImageFont.ImageFont:
    for name in FONT_FILES:
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default(size=size)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def contact_sheet(frames: Sequence[Path], prompts: Sequence[str], out: Path) -> Path:
    """One frame per scene in a grid, each captioned "N. prompt"."""
    n = len(frames)
    columns = math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    caption_font = font(14)
    line_height = 18
    caption_lines = 3
    pad = 8
    cell_w, cell_h = CELL + 2 * pad, CELL + pad + caption_lines * line_height + pad
    sheet = Image.new("RGB", (columns * cell_w, rows * cell_h), (18, 18, 18))
    draw = ImageDraw.Draw(sheet)
    for k, (frame, prompt) in enumerate(zip(frames, prompts)):
        x, y = (k % columns) * cell_w + pad, (k // columns) * cell_h + pad
        with Image.open(frame) as image:
            sheet.paste(image.convert("RGB").resize((CELL, CELL), Image.LANCZOS), (x, y))
        lines = textwrap.wrap(f"{k + 1}. {' '.join(prompt.split())}", width=34) or [f"{k + 1}."]
        if len(lines) > caption_lines:
            lines = lines[: caption_lines - 1] + [lines[caption_lines - 1][:31] + "..."]
        for i, line in enumerate(lines):
            draw.text((x, y + CELL + 4 + i * line_height), line, fill=(235, 235, 235), font=caption_font)
    atomic_write(out, png_bytes(sheet))
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
