"""Inline SVG charts: bars, a line, a heat map. Plain strings, no library, no script,
nothing fetched: the report opens and prints the same on a machine without network."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

W, H = 720, 220
PAD_L, PAD_B, PAD_T = 56, 28, 26


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 10 else f"{v:.2g}"


def _axis(top: float, unit: str) -> list[str]:
    out = []
    for i in range(5):
        v = top * i / 4
        y = H - PAD_B - (H - PAD_B - PAD_T) * i / 4
        out.append(
            f'<line x1="{PAD_L}" x2="{W}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
            f'<text x="{PAD_L - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="10">'
            f"{_fmt(v)}</text>"
        )
    out.append(f'<text x="4" y="{PAD_T - 10}" font-size="10">{escape(unit)}</text>')
    return out


def bars(
    title: str,
    labels: Sequence[str],
    series: Sequence[tuple[str, str, Sequence[float]]],
    unit: str,
) -> str:
    """Stacked bars: one per label, a (name, colour, values) per series, with a legend."""
    n = max(1, len(labels))
    totals = [sum(s[2][i] for s in series) for i in range(len(labels))]
    top = max(totals, default=0.0) or 1.0
    plot_w, plot_h = W - PAD_L, H - PAD_B - PAD_T
    bw = plot_w / n
    parts = _axis(top, unit)
    for i in range(len(labels)):
        base = 0.0
        for _name, colour, values in series:
            v = values[i]
            h = plot_h * v / top
            y = H - PAD_B - plot_h * (base + v) / top
            parts.append(
                f'<rect x="{PAD_L + i * bw + bw * 0.1:.1f}" y="{y:.1f}" width="{bw * 0.8:.1f}" '
                f'height="{h:.1f}" fill="{colour}"/>'
            )
            base += v
        if i % _label_step(n) == 0:
            parts.append(
                f'<text x="{PAD_L + (i + 0.5) * bw:.1f}" y="{H - PAD_B + 12}" font-size="9" '
                f'text-anchor="middle">{escape(labels[i])}</text>'
            )
    parts += _legend([(name, colour) for name, colour, _ in series])
    return _svg(title, parts)


def line(title: str, labels: Sequence[str], values: Sequence[float], unit: str) -> str:
    n = max(1, len(values) - 1)
    top = max(values, default=0.0) or 1.0
    plot_w, plot_h = W - PAD_L - 8, H - PAD_B - PAD_T
    pts = " ".join(
        f"{PAD_L + plot_w * i / n:.1f},{H - PAD_B - plot_h * v / top:.1f}"
        for i, v in enumerate(values)
    )
    parts = _axis(top, unit)
    parts.append(f'<polyline points="{pts}" fill="none" stroke="#1f77b4" stroke-width="2"/>')
    for i, label in enumerate(labels):
        parts.append(
            f'<text x="{PAD_L + plot_w * i / n:.1f}" y="{H - PAD_B + 12}" font-size="9" '
            f'text-anchor="middle">{escape(label)}</text>'
        )
    return _svg(title, parts)


def heat(
    title: str,
    rows: Sequence[str],
    cols: Sequence[str],
    values: Sequence[Sequence[float | None]],
    colour: str = "#2ca02c",
    zero_colour: str | None = None,
) -> str:
    """Cells shaded by a value in 0..1 (None: grey): coverage, verification; with
    ``zero_colour``, a 0 is that colour in full (a broken hour is red, not pale)."""
    label_w = 110
    cw = (W - label_w) / max(1, len(cols))
    ch = 14
    height = ch * len(rows) + 24
    parts = []
    for r, name in enumerate(rows):
        y = r * ch
        parts.append(f'<text x="0" y="{y + 11}" font-size="10">{escape(name[:18])}</text>')
        for c, v in enumerate(values[r]):
            fill = "#ccc" if v is None else colour
            opacity = 1.0 if v is None else 0.1 + 0.9 * max(0.0, min(1.0, v))
            if v == 0 and zero_colour is not None:
                fill, opacity = zero_colour, 1.0
            parts.append(
                f'<rect x="{label_w + c * cw:.1f}" y="{y}" width="{max(cw - 1, 0.5):.1f}" '
                f'height="{ch - 1}" fill="{fill}" fill-opacity="{opacity:.2f}"/>'
            )
    for c in range(0, len(cols), _label_step(len(cols))):
        parts.append(
            f'<text x="{label_w + c * cw:.1f}" y="{height - 8}" font-size="9">'
            f"{escape(cols[c])}</text>"
        )
    return _svg(title, parts, height)


def _label_step(n: int) -> int:
    """Every label up to 16, then every 2nd, 5th, 7th ...: no label runs into the next."""
    return 1 if n <= 16 else max(2, -(-n // 12))


def _legend(items: Sequence[tuple[str, str]]) -> list[str]:
    out = []
    for i, (name, colour) in enumerate(items):
        x = PAD_L + 60 + i * 160
        out.append(
            f'<rect x="{x}" y="4" width="10" height="10" fill="{colour}"/>'
            f'<text x="{x + 14}" y="13" font-size="10">{escape(name)}</text>'
        )
    return out


def _svg(title: str, parts: list[str], height: int = H) -> str:
    return (
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {height}" '
        f'role="img" aria-label="{escape(title)}"><title>{escape(title)}</title>'
        + "".join(parts)
        + "</svg>"
    )
