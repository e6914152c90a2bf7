"""Server-rendered SVG charts of the last editions' figures (issue 16): no script,
no charting library, nothing fetched.

Each chart is built with :mod:`xml.etree.ElementTree`, which escapes every text and
attribute value it writes, so no edition key or label can turn into markup: the
page may insert the string as it is. Every chart is an ``<svg role="img">`` named
by ``aria-label`` and its ``<title>``, with a ``<desc>`` that lists the values in
words; every bar and point has a ``<title>`` of its own (a tooltip) and its value
printed beside it. The page shows the same numbers in a table as well.

- :func:`sent_and_clicks`: messages sent beside unique clicks, grouped bars;
- :func:`click_rate`: unique clicks ÷ delivered (%), a line (a gap where nothing
  was delivered);
- :func:`votes`: ship over skip, stacked bars.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from xml.etree import ElementTree as ET

from digest.engagement.stats import EditionStats

WIDTH, HEIGHT = 720, 330
LEFT, RIGHT, TOP, BOTTOM = 60, 12, 48, 84  # the plot area's margins
FONT = "system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif"
INK, GRID, MUTED = "#1F2937", "#E5E7EB", "#4B5563"
SENT, CLICKS, RATE, SHIP, SKIP = "#94A3B8", "#1D4ED8", "#B45309", "#047857", "#B91C1C"


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    color: str
    values: Sequence[float | None]  # one per edition; None: nothing to show
    unit: str = ""  # after a value: "%"


def sent_and_clicks(stats: Sequence[EditionStats]) -> str:
    """Sent and unique clicks per edition, side by side."""
    series = [
        Series("Sent", SENT, [s.sent for s in stats]),
        Series("Unique clicks", CLICKS, [s.unique_clicks for s in stats]),
    ]
    return _bars("chart-sent", "Sent and unique clicks per edition", stats, series, "messages")


def click_rate(stats: Sequence[EditionStats]) -> str:
    """Unique clicks as a share of delivered messages, per edition."""
    series = Series("Click rate", RATE, [s.click_rate for s in stats], "%")
    title = "Click rate per edition (unique clicks ÷ delivered)"
    svg, plot = _frame("chart-rate", title, stats, [series], "percent", stacked=False)
    if plot is None:
        return _text(svg)
    runs: list[list[tuple[float, float]]] = [[]]  # unbroken stretches of the line
    for i, value in enumerate(series.values):
        if value is None:
            runs.append([])
        else:
            runs[-1].append((plot.middle(i), plot.y(value)))
    for run in (r for r in runs if len(r) > 1):
        line = ET.SubElement(svg, "polyline", fill="none", stroke=RATE)
        line.attrib.update({"points": " ".join(f"{x:.1f},{y:.1f}" for x, y in run)})
        line.attrib.update({"stroke-width": "2.5", "stroke-linejoin": "round"})
    for i, (stat, value) in enumerate(zip(stats, series.values, strict=True)):
        if value is None:
            continue
        x, y = plot.middle(i), plot.y(value)
        dot = ET.SubElement(svg, "circle", cx=f"{x:.1f}", cy=f"{y:.1f}", r="4", fill=RATE)
        _title(dot, f"{stat.key}: click rate {_value(value, '%')}")
        _label(svg, x, y - 9, _value(value, "%"))
    return _text(svg)


def votes(stats: Sequence[EditionStats]) -> str:
    """Readers' ship and skip votes per edition, stacked."""
    series = [
        Series("Ship it", SHIP, [s.ship for s in stats]),
        Series("Skip it", SKIP, [s.skip for s in stats]),
    ]
    return _bars("chart-votes", "Readers' votes per edition", stats, series, "votes", stacked=True)


@dataclass(frozen=True, slots=True)
class _Plot:
    count: int  # editions
    top: float  # the value at the top of the axis

    @property
    def slot(self) -> float:
        return (WIDTH - LEFT - RIGHT) / max(self.count, 1)

    def middle(self, i: int) -> float:
        return LEFT + self.slot * (i + 0.5)

    def y(self, value: float) -> float:
        return HEIGHT - BOTTOM - (HEIGHT - TOP - BOTTOM) * (value / self.top if self.top else 0)


def _bars(
    chart_id: str,
    title: str,
    stats: Sequence[EditionStats],
    series: list[Series],
    axis: str,
    *,
    stacked: bool = False,
) -> str:
    svg, plot = _frame(chart_id, title, stats, series, axis, stacked=stacked)
    if plot is None:
        return _text(svg)
    width = plot.slot * 0.7 / (1 if stacked else len(series))
    for i, stat in enumerate(stats):
        left, base = plot.middle(i) - plot.slot * 0.35, 0.0
        for j, s in enumerate(series):
            value = float(s.values[i] or 0)
            x = left if stacked else left + j * width
            top, bottom = plot.y(base + value), plot.y(base)
            bar = ET.SubElement(svg, "rect", x=f"{x:.1f}", y=f"{top:.1f}", fill=s.color)
            bar.set("width", f"{max(width - 1, 1):.1f}")
            bar.set("height", f"{max(bottom - top, 0):.1f}")
            _title(bar, f"{stat.key}: {s.name.lower()} {_value(value)}")
            if not stacked:
                _label(svg, x + width / 2, top - 4, _value(value))
            base = base + value if stacked else 0.0
        if stacked:
            total = sum(float(s.values[i] or 0) for s in series)
            _label(svg, plot.middle(i), plot.y(total) - 4, _value(total))
    return _text(svg)


def _frame(
    chart_id: str,
    title: str,
    stats: Sequence[EditionStats],
    series: list[Series],
    axis: str,
    *,
    stacked: bool,
) -> tuple[ET.Element, _Plot | None]:
    """The svg with its name, description, legend, axes and edition labels; the plot's
    scale, or None when there is nothing to plot (the svg then says so)."""
    svg = ET.Element("svg", xmlns="http://www.w3.org/2000/svg", id=chart_id, role="img")
    svg.attrib.update({"viewBox": f"0 0 {WIDTH} {HEIGHT}", "aria-label": title})
    svg.attrib.update({"width": "100%", "font-family": FONT, "font-size": "13", "fill": INK})
    ET.SubElement(svg, "title").text = title
    ET.SubElement(svg, "desc").text = _describe(stats, series)
    if not stats:
        _label(svg, WIDTH / 2, HEIGHT / 2, "No edition has gone out yet.", size=14)
        return svg, None
    totals = [
        sum(float(s.values[i] or 0) for s in series) if stacked else
        max(float(s.values[i] or 0) for s in series)
        for i in range(len(stats))
    ]  # fmt: skip
    step = _step(max(totals), whole=series[0].unit != "%")
    plot = _Plot(len(stats), step * max(math.ceil(max(totals) / step), 1))
    for k in range(round(plot.top / step) + 1):
        value = step * k
        y = plot.y(value)
        rule = ET.SubElement(svg, "line", x1=str(LEFT), x2=str(WIDTH - RIGHT), stroke=GRID)
        rule.attrib.update({"y1": f"{y:.1f}", "y2": f"{y:.1f}"})
        _label(svg, LEFT - 6, y + 4, _value(value) + series[0].unit, anchor="end", color=MUTED)
    axis_label = ET.SubElement(svg, "text", x="14", y=str((TOP + HEIGHT - BOTTOM) // 2))
    axis_label.attrib.update({"transform": f"rotate(-90 14 {(TOP + HEIGHT - BOTTOM) // 2})"})
    axis_label.attrib.update({"text-anchor": "middle", "fill": MUTED})
    axis_label.text = axis
    turn = plot.slot < 56
    for i, stat in enumerate(stats):
        x, y = plot.middle(i), HEIGHT - BOTTOM + 16
        label = _label(svg, x, y, stat.key, size=12, anchor="end" if turn else "middle")
        if turn:
            label.set("transform", f"rotate(-35 {x:.1f} {y})")
    _label(svg, (LEFT + WIDTH - RIGHT) / 2, HEIGHT - 4, "edition", color=MUTED, size=13)
    x = float(LEFT)
    for s in series:
        ET.SubElement(svg, "rect", x=f"{x:.0f}", y="12", width="13", height="13", fill=s.color)
        _label(svg, x + 17, 23, s.name, anchor="start", size=13)
        x += 32 + 7.5 * len(s.name)
    return svg, plot


def _describe(stats: Sequence[EditionStats], series: list[Series]) -> str:
    parts = [
        f"{stat.key}: "
        + ", ".join(f"{s.name.lower()} {_value(s.values[i], s.unit)}" for s in series)
        for i, stat in enumerate(stats)
    ]
    return "; ".join(parts) + "." if parts else "No edition has gone out yet."


def _step(top: float, *, whole: bool) -> float:
    """A round step (1, 2 or 5 × 10ⁿ) that covers ``top`` in at most five; at least 1
    for ``whole`` numbers (counts)."""
    raw = max(top, 1e-9) / 5
    power = 10 ** math.floor(math.log10(raw))
    step = float(next(m * power for m in (1, 2, 5, 10) if m * power >= raw))
    return max(step, 1.0) if whole else step


def _value(value: float | None, unit: str = "") -> str:
    if value is None:
        return "none"
    if unit == "%":
        return f"{value:.1f}%"
    return f"{value:,.0f}" if value == int(value) else f"{value:,.1f}"


def _label(
    parent: ET.Element,
    x: float,
    y: float,
    text: str,
    *,
    size: int = 12,
    anchor: str = "middle",
    color: str = INK,
) -> ET.Element:
    element = ET.SubElement(parent, "text", x=f"{x:.1f}", y=f"{y:.1f}", fill=color)
    element.attrib.update({"text-anchor": anchor, "font-size": str(size)})
    element.text = text
    return element


def _title(parent: ET.Element, text: str) -> None:
    ET.SubElement(parent, "title").text = text


def _text(svg: ET.Element) -> str:
    return ET.tostring(svg, encoding="unicode", method="xml")
