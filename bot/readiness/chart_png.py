"""Draws a ``ChartSpec`` as a PNG with Pillow: lines on a 0-100 % grid, a legend with the latest values.

The only module that knows Pillow. Small on purpose (800 x 420, tens of KB), so
it uploads fast and reads well on a phone.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.readiness.chart import ChartSpec, Series

if TYPE_CHECKING:
    from PIL import ImageDraw, ImageFont

WIDTH = 800
HEIGHT = 420
_MARGIN_LEFT = 48
_MARGIN_TOP = 40
_MARGIN_BOTTOM = 40
_LEGEND_WIDTH = 230
_GRID = (225, 225, 225)
_AXIS = (120, 120, 120)
_TEXT = (30, 30, 30)
_FONT_SIZE = 13
_TITLE_SIZE = 15


@dataclass(frozen=True, slots=True)
class Png:
    data: bytes
    width: int
    height: int


def render_png(spec: ChartSpec) -> Png:
    # Imported here: Pillow and its libraries (freetype, harfbuzz) cost ~4 MiB
    # of RSS, which a bot that never draws a chart (no readiness, or no
    # !readiness trend asked for) should not carry. commands/readiness.py
    # imports this module whatever the configuration.
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=_FONT_SIZE)
    title_font = ImageFont.load_default(size=_TITLE_SIZE)
    left, top = _MARGIN_LEFT, _MARGIN_TOP
    right, bottom = WIDTH - _LEGEND_WIDTH, HEIGHT - _MARGIN_BOTTOM

    draw.text((left, 12), spec.title, fill=_TEXT, font=title_font)
    for percent in (0, 25, 50, 75, 100):
        y = _y(percent, top, bottom)
        draw.line([(left, y), (right, y)], fill=_GRID, width=1)
        draw.text((left - 8, y), f"{percent}", fill=_AXIS, font=font, anchor="rm")
    draw.line([(left, top), (left, bottom), (right, bottom)], fill=_AXIS, width=1)
    positions = _label_positions(spec.runs)
    for index in positions:
        x = _x(index, spec.runs, left, right)
        draw.line([(x, bottom), (x, bottom + 4)], fill=_AXIS, width=1)
        # The outer labels align inwards, so they never run off the plot.
        anchor = "lt" if index == 0 and len(positions) > 1 else "rt" if index == spec.runs - 1 > 0 else "mt"
        draw.text((x, bottom + 8), spec.labels[index], fill=_AXIS, font=font, anchor=anchor)

    # Thin lines first, so the overall line stays on top.
    for series in sorted(spec.series, key=lambda s: s.width):
        _plot(draw, series, spec.runs, (left, top, right, bottom))
    _legend(draw, spec.series, right + 16, top, font)

    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return Png(buffer.getvalue(), WIDTH, HEIGHT)


def _plot(draw: ImageDraw.ImageDraw, series: Series, runs: int, box: tuple[int, int, int, int]) -> None:
    left, top, right, bottom = box
    points = [
        (_x(index, runs, left, right), _y(value, top, bottom))
        for index, value in enumerate(series.values)
        if value is not None
    ]
    if len(points) > 1:
        draw.line(points, fill=series.colour, width=series.width, joint="curve")
    radius = series.width + 1
    for x, y in points[-1:] if len(points) > 1 else points:
        draw.ellipse([(x - radius, y - radius), (x + radius, y + radius)], fill=series.colour)


def _legend(
    draw: ImageDraw.ImageDraw,
    series: tuple[Series, ...],
    x: int,
    y: int,
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
) -> None:
    for offset, item in enumerate(series):
        row = y + offset * 22
        draw.rectangle([(x, row + 3), (x + 14, row + 13)], fill=item.colour)
        latest = next((value for value in reversed(item.values) if value is not None), None)
        shown = "—" if latest is None else f"{latest:g}%"
        draw.text((x + 22, row), f"{item.name}: {shown}", fill=_TEXT, font=font)


def _x(index: int, runs: int, left: int, right: int) -> float:
    if runs <= 1:
        return (left + right) / 2
    return left + 10 + index * (right - left - 20) / (runs - 1)


def _y(percent: float, top: int, bottom: int) -> float:
    return bottom - percent / 100 * (bottom - top)


def _label_positions(runs: int) -> list[int]:
    """First, middle and last run (fewer when there are fewer runs)."""
    if runs == 0:
        return []
    return sorted({0, (runs - 1) // 2, runs - 1})
