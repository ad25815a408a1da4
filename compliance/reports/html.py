"""The HTML report: one self-contained file (inline CSS and SVG, no scripts from anywhere, no CDN)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

TEMPLATES = Path(__file__).resolve().parent / "templates"
_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(TEMPLATES)),
    undefined=jinja2.StrictUndefined,
    autoescape=True,
    trim_blocks=True,
    lstrip_blocks=True,
)


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


def device_details(devices: list[dict[str, Any]]) -> Markup:
    """The device section (thousands of rows): built here with explicit escaping, because a
    template loop over ~15,000 results costs more than the whole rest of the report."""
    e = html.escape
    out: list[str] = []
    for d in devices:
        head = [f"{e(d['fleet'])} / "]
        if d["school"]:
            head.append(f"{e(d['school'])} / ")
        head.append(f"<b>{e(d['name'])}</b>")
        if d["name"] != d["id"]:
            head.append(f" ({e(d['id'])})")
        head.append(": compliant" if d["compliant"] else ": not compliant")
        if not d["reachable"]:
            head.append(f", unreachable: {e(d['reason'])}")
        if d["last_seen"]:
            head.append(f", last seen {e(d['last_seen'])}")
        if d["evidence_at"]:
            head.append(f", <b>{e(d['evidence'])}</b>")
            if d["reason"]:  # why it was judged on stored evidence (unreachable now, switched off)
                head.append(f' <span class="muted">({e(d["reason"])})</span>')
        elif d["evidence"] == "never seen":
            head.append(", never seen")
        cls = "" if d["compliant"] else ' class="noncompliant"'
        out.append(
            f'<details data-device="{e(d["id"])}"{cls}>\n<summary>{"".join(head)}</summary>\n'
            "<table><tr><th>Rule</th><th>Status</th><th>Evidence</th></tr>\n"
        )
        for x in d["results"]:
            waiver = f' <span class="muted">[waiver {e(x["waiver"])}]</span>' if x["waiver"] else ""
            out.append(
                f'<tr><td><code>{e(x["rule"])}</code></td><td><span class="st st-{e(x["status"])}">'
                f"{e(x['status'])}</span></td><td>{e(x['evidence'])}{waiver}</td></tr>\n"
            )
        out.append("</table>\n</details>\n")
    return Markup("".join(out))


def render_html(report: dict[str, Any]) -> str:
    pts = trend_svg_points(report["trend"])
    return _env.get_template("report.html.j2").render(
        r=report,
        points=pts,
        polyline=" ".join(f"{p['x']},{p['y']}" for p in pts),
        W=W,
        H=H,
        PAD=PAD,
        device_details=device_details(report["devices"]),
    )
