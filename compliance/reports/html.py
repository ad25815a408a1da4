"""The HTML report: one self-contained file (inline CSS and SVG, no scripts from anywhere, no CDN)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

TEMPLATES = Path(__file__).resolve().parent / "templates"
_env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), undefined=jinja2.StrictUndefined,
                          autoescape=True, trim_blocks=True, lstrip_blocks=True)


def percent(rate: float) -> str:
    return f"{rate * 100:.1f} %"


_env.filters["percent"] = percent

W, H, PAD = 640, 180, 30


def trend_svg_points(trend: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pixel positions of the pass-rate points of the last runs (oldest left)."""
    n = len(trend)
    pts = []
    for i, t in enumerate(trend):
        x = PAD + (W - 2 * PAD) * (i / (n - 1) if n > 1 else 0.5)
        y = PAD + (H - 2 * PAD) * (1 - float(t["pass_rate"]))
        pts.append({"x": round(x, 1), "y": round(y, 1), **t})
    return pts


def render_html(report: dict[str, Any]) -> str:
    pts = trend_svg_points(report["trend"])
    return _env.get_template("report.html.j2").render(
        r=report, points=pts, polyline=" ".join(f"{p['x']},{p['y']}" for p in pts), W=W, H=H, PAD=PAD)
