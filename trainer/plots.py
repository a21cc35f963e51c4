"""PNG training curves from ``metrics.json``, drawn with Pillow (no plotting library needed on
a cluster node): learning rate, loss components, bbox/segm AP, per-category AP, iteration time
and peak memory."""
from __future__ import annotations

import json
import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def read_metrics(path: str | Path) -> list[dict]:
    """The JSON lines of a metrics file (a torn last line from a killed run is skipped)."""
    rows = []
    p = Path(path)
    if not p.is_file():
        return rows
    for line in p.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def series(rows: list[dict], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for r in rows:
        v = r.get(key)
        if isinstance(v, (int, float)) and math.isfinite(v) and "iteration" in r:
            xs.append(float(r["iteration"]))
            ys.append(float(v))
    return xs, ys


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 5, 10) if m * mag >= raw), default=raw)
    start = math.ceil(lo / step) * step
    out = []
    v = start
    while v <= hi + 1e-12 * abs(hi):
        out.append(v)
        v += step
    return out


def line_chart(data: dict[str, tuple[list[float], list[float]]], title: str, ylabel: str,
               path: str | Path, log_y: bool = False, size=(800, 480)) -> Path | None:
    """One PNG with a line (and dots) per series; None when there is nothing to draw."""
    data = {k: v for k, v in data.items() if v[0]}
    if log_y:
        data = {k: ([x for x, y in zip(*v) if y > 0], [math.log10(y) for y in v[1] if y > 0])
                for k, v in data.items()}
        data = {k: v for k, v in data.items() if v[0]}
    if not data:
        return None
    w, h = size
    left, right, top, bottom = 80, 20, 40, 60
    legend_h = 18 * ((len(data) + 2) // 3)
    img = Image.new("RGB", (w, h + legend_h), "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    xs = [x for v in data.values() for x in v[0]]
    ys = [y for v in data.values() for y in v[1]]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        y0, y1 = y0 - (abs(y0) * 0.1 or 1), y1 + (abs(y1) * 0.1 or 1)
    pad = (y1 - y0) * 0.05
    y0, y1 = y0 - pad, y1 + pad

    def px(x, y):
        return (left + (x - x0) / (x1 - x0) * (w - left - right),
                h - bottom - (y - y0) / (y1 - y0) * (h - top - bottom))

    d.rectangle([left, top, w - right, h - bottom], outline="black")
    for t in _ticks(y0, y1):
        _, yy = px(x0, t)
        d.line([left - 4, yy, left, yy], fill="black")
        d.line([left, yy, w - right, yy], fill=(230, 230, 230))
        label = f"1e{t:g}" if log_y else f"{t:.4g}"
        d.text((4, yy - 6), label, fill="black", font=font)
    for t in _ticks(x0, x1):
        xx, _ = px(t, y0)
        d.line([xx, h - bottom, xx, h - bottom + 4], fill="black")
        d.text((xx - 12, h - bottom + 8), f"{t:.0f}", fill="black", font=font)
    d.text((w // 2 - 30, h - 22), "iteration", fill="black", font=font)
    d.text((left, 12), f"{title}  ({ylabel}{', log10' if log_y else ''})", fill="black",
           font=font)
    for k, (name, (sx, sy)) in enumerate(data.items()):
        colour = COLOURS[k % len(COLOURS)]
        pts = [px(x, y) for x, y in zip(sx, sy)]
        if len(pts) > 1:
            d.line(pts, fill=colour, width=2)
        if len(pts) < 60:
            for x, y in pts:
                d.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
        lx = left + (k % 3) * 240
        ly = h + 18 * (k // 3)
        d.line([lx, ly + 6, lx + 20, ly + 6], fill=colour, width=3)
        d.text((lx + 26, ly), name, fill="black", font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def write_plots(metrics_file: str | Path, out_dir: str | Path) -> list[Path]:
    """All curves of a run folder's metrics.json into ``out_dir``; returns the files written."""
    rows = read_metrics(metrics_file)
    out_dir = Path(out_dir)
    keys = sorted({k for r in rows for k in r})
    loss_keys = [k for k in keys if k.startswith("loss") or k == "total_loss"]
    ap_keys = [k for k in keys if k in ("bbox/AP", "segm/AP", "bbox/AP50", "segm/AP50")]
    class_keys = [k for k in keys if "/AP-" in k]
    written = [
        line_chart({"lr": series(rows, "lr")}, "learning rate", "lr", out_dir / "lr.png"),
        line_chart({k: series(rows, k) for k in loss_keys}, "losses", "loss",
                   out_dir / "losses.png", log_y=True),
        line_chart({k: series(rows, k) for k in ap_keys}, "validation AP", "AP %",
                   out_dir / "ap.png"),
        line_chart({k: series(rows, k) for k in class_keys}, "per-category AP", "AP %",
                   out_dir / "ap_per_category.png"),
        line_chart({"time": series(rows, "time"), "data_time": series(rows, "data_time")},
                   "iteration time", "seconds", out_dir / "time.png"),
        line_chart({"peak memory": series(rows, "peak_memory_mb")}, "peak memory", "MB",
                   out_dir / "memory.png"),
    ]
    return [p for p in written if p is not None]
