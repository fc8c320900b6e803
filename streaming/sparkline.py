"""Small terminal glyphs for the dashboard: MOS sparklines and large digits."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rich.text import Text

BARS = "▁▂▃▄▅▆▇█"

# 3x5 pixel digits; each pixel is drawn two cells wide so a digit is 6 columns by 5 rows.
_FONT = {
    "0": ("###", "#.#", "#.#", "#.#", "###"),
    "1": (".#.", "##.", ".#.", ".#.", "###"),
    "2": ("###", "..#", "###", "#..", "###"),
    "3": ("###", "..#", "###", "..#", "###"),
    "4": ("#.#", "#.#", "###", "..#", "..#"),
    "5": ("###", "#..", "###", "..#", "###"),
    "6": ("###", "#..", "###", "#.#", "###"),
    "7": ("###", "..#", "..#", "..#", "..#"),
    "8": ("###", "#.#", "###", "#.#", "###"),
    "9": ("###", "#.#", "###", "..#", "###"),
    ".": (".", ".", ".", ".", "#"),
    "-": ("...", "...", "###", "...", "..."),
}
BIG_HEIGHT = 5


def big_width(text: str) -> int:
    """Columns that ``big_text(text)`` takes."""
    return sum(2 * len(_FONT[c][0]) for c in text) + max(len(text) - 1, 0)


def big_text(text: str, style: str = "") -> Text:
    """``text`` (digits, '.', '-') drawn in block characters, five rows high."""
    rows = []
    for r in range(BIG_HEIGHT):
        glyphs = ("".join("██" if p == "#" else "  " for p in _FONT[c][r]) for c in text)
        rows.append(" ".join(glyphs))
    return Text("\n".join(rows), style=style, no_wrap=True)


def sparkline(
    points: Sequence[tuple[float, float | None]],
    width: int,
    *,
    span: float,
    end: float,
    lo: float = 1.0,
    hi: float = 5.0,
    style_for: Callable[[float], str] | None = None,
) -> Text:
    """Draw ``(time, value)`` points of the last ``span`` seconds up to ``end`` in ``width`` cells.

    Each cell is one time bucket holding the mean of its values, so the chart scrolls at a
    steady rate whatever the window hop. Buckets with no value (no speech, or before the
    stream began) stay blank. ``style_for(value)`` colours each cell.
    """
    if width <= 0:
        return Text()
    sums = [0.0] * width
    counts = [0] * width
    start = end - span
    for t, v in points:
        if v is None or t <= start or t > end:
            continue
        i = min(int((t - start) / span * width), width - 1)
        sums[i] += v
        counts[i] += 1
    # Cells are appended in runs of one style: far fewer spans for rich to render.
    out = Text(no_wrap=True)
    run, run_style = "", ""
    for total, n in zip(sums, counts):
        if n:
            v = total / n
            level = round((min(max(v, lo), hi) - lo) / (hi - lo) * (len(BARS) - 1))
            glyph, style = BARS[level], style_for(v) if style_for else ""
        else:
            glyph, style = " ", ""
        if style != run_style and run:
            out.append(run, style=run_style)
            run = ""
        run, run_style = run + glyph, style
    out.append(run, style=run_style)
    return out


def _ago(seconds: float) -> str:
    return f"-{seconds / 60:g} min" if seconds >= 60 and seconds % 60 == 0 else f"-{seconds:g} s"


def time_axis(width: int, span: float, style: str = "") -> Text:
    """The scale under a ``sparkline`` of ``width`` cells over the last ``span`` seconds:
    ``-2 min`` at its left edge, ``-1 min`` at its middle, ``now`` at its right, as room allows."""
    cells = [" "] * max(width, 0)

    def put(label: str, at: int) -> bool:
        if at < 0 or at + len(label) > width or any(c != " " for c in cells[max(at - 1, 0) : at + len(label) + 1]):
            return False
        cells[at : at + len(label)] = label
        return True

    put("now", width - 3)
    if put(_ago(span), 0):
        middle = _ago(span / 2)
        put(middle, width // 2 - len(middle) // 2)
    return Text("".join(cells), style=style, no_wrap=True)
