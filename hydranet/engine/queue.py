"""The labelling queue on disk: ``queue.jsonl`` (one ranked frame a line), optionally
``queue.parquet`` (only when pyarrow is installed), ``mine_summary.json`` and ``queue.html``.

A queue line::

    {"rank": 1, "index": 812, "frame_id": "world-7-000040#12", "scene_id": "world-7-000040",
     "frame_index": 12, "score": 0.71, "scores": {"entropy/drivable": 0.9, "flicker": null, ...},
     "reason": "drivable: 23.5 % of pixels uncertain; ...", "metadata": {"lighting": "night", ...},
     "nearest_pick": "world-7-000040#9", "nearest_distance": 0.21}

``index`` addresses the frame in the pool the queue was mined from (``summary["pool"]``); a
``null`` score means that trigger raised on the frame (its reason says how).
"""

from __future__ import annotations

import html
import io
import json
import os
from pathlib import Path
from typing import Any

from PIL import Image
from torch.utils.data import Dataset

from hydranet.engine.mine import MineResult
from hydranet.json_files import dumps
from hydranet.limits import loads_json


class QueueError(ValueError):
    """A missing or corrupt queue file; the message names it and the line."""


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def queue_summary(result: MineResult, pool: str, model: str, triggers: list[str], budget: int,
                  settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """What ``mine_summary.json`` holds and ``queue.html`` heads its page with: the pool, model, trigger names,
    budget, counts, trigger failures and timing of a mining run, and ``settings``: how the queue was mined (the
    trigger spec string, ``oversample``, ``radius``, ``limit``, ``max_per_scene``), so the command can be
    rebuilt from it."""
    return {"pool": pool, "model": model, "triggers": triggers, "budget": budget, "frames": result.frames,
            "picked": len(result.queue), "trigger_errors": result.errors, "error_messages": result.error_messages,
            "trigger_means": result.trigger_means, "dedup_radius": result.radius, "seconds": result.seconds,
            "world_size": result.world_size, "settings": dict(settings or {})}


def write_queue(out: str | Path, result: MineResult, summary: dict[str, Any], parquet: bool = False) -> dict[str, Path]:
    """Write the queue files into directory ``out`` (``queue.jsonl``, ``mine_summary.json`` holding ``summary``
    from ``queue_summary``, ``queue.parquet`` with ``parquet``); returns their paths by kind."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"jsonl": out / "queue.jsonl", "summary": out / "mine_summary.json"}
    _atomic_text(paths["jsonl"], "".join(dumps(r, indent=None) + "\n" for r in result.queue))
    _atomic_text(paths["summary"], dumps(summary))
    if parquet:
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = [{**r, "scores": json.dumps(r["scores"]), "metadata": json.dumps(r["metadata"])} for r in result.queue]
        pq.write_table(pa.Table.from_pylist(rows), out / "queue.parquet")
        paths["parquet"] = out / "queue.parquet"
    return paths


def read_queue(path: str | Path) -> list[dict[str, Any]]:
    """Queue lines of ``queue.jsonl`` (or a directory holding it), in rank order. ``QueueError`` names the
    file and line of a line that is not JSON, nests too deep, lacks an integer ``index``, or queues a pool
    index a second time."""
    p = Path(path)
    if p.is_dir():
        p = p / "queue.jsonl"
    if not p.is_file():
        raise QueueError(f"{p}: no queue (expected queue.jsonl written by `hydranet mine`)")
    rows = []
    seen: dict[int, int] = {}
    for n, line in enumerate(p.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = loads_json(line, f"{p}:{n}", QueueError)
        except json.JSONDecodeError as e:
            raise QueueError(f"{p}:{n}: not JSON ({e.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("index"), int) or isinstance(row["index"], bool):
            raise QueueError(f"{p}:{n}: a queue line needs an integer 'index'")
        if row["index"] < 0:
            raise QueueError(f"{p}:{n}: index {row['index']} is negative (pool indices start at 0)")
        if row["index"] in seen:  # labelled twice, paid twice, trained on twice
            raise QueueError(f"{p}:{n}: index {row['index']} is queued twice (first on line {seen[row['index']]})")
        seen[row["index"]] = n
        rows.append(row)
    return rows


def _rig_thumbnail(images: Any, width: int = 640) -> Image.Image:
    """All cameras of one frame (uint8 ``[N, 3, H, W]``) tiled in rows of four, ``width`` px wide."""
    arr = images.permute(0, 2, 3, 1).numpy()
    n, h, w = arr.shape[:3]
    cols = min(4, n)
    rows = -(-n // cols)
    sheet = Image.new("RGB", (cols * w, rows * h), (0, 0, 0))
    for k in range(n):
        sheet.paste(Image.fromarray(arr[k]), ((k % cols) * w, (k // cols) * h))
    return sheet.resize((width, round(sheet.height * width / sheet.width)), Image.Resampling.BILINEAR)


def _jpeg_uri(img: Image.Image) -> str:
    import base64

    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def write_queue_html(path: str | Path, queue: list[dict[str, Any]], pool: Dataset, summary: dict[str, Any],
                     max_frames: int = 60) -> Path:
    """A self-contained page: one row per pick with the rig thumbnail, scores and reason."""
    rows = []
    for r in queue[:max_frames]:
        img = _rig_thumbnail(pool[r["index"]].images)
        scores = " ".join(f"<span class=s>{html.escape(k)} {'—' if v is None else f'{v:.2f}'}</span>"
                          for k, v in r["scores"].items())
        meta = ", ".join(f"{k}={v}" for k, v in r.get("metadata", {}).items())
        rows.append(f"<tr><td>{r['rank']}</td><td><img src='{_jpeg_uri(img)}'></td><td><b>"
                    f"{html.escape(r['frame_id'])}</b> (pool #{r['index']})<br>score {r['score']:.3f}<br>"
                    f"{scores}<br><i>{html.escape(meta)}</i><p>{html.escape(r['reason'])}</p></td></tr>")
    errs = {k: v for k, v in summary.get("trigger_errors", {}).items() if v}
    err_html = ("<p class=err>trigger failures: " + html.escape(json.dumps(errs)) + "</p>") if errs else ""
    per_scene = (summary.get("settings") or {}).get("max_per_scene")
    cap = f", at most {per_scene} per scene" if per_scene else ""
    page = f"""<!doctype html><meta charset=utf-8><title>hydranet mining queue</title>
<style>body{{font:14px system-ui;margin:20px}}td{{vertical-align:top;padding:6px;border-bottom:1px solid #ddd}}
img{{width:640px}}.s{{background:#eef;margin-right:6px;padding:1px 4px;border-radius:3px;font-size:12px}}
.err{{color:#b00}}</style>
<h1>Mining queue</h1>
<p>pool <code>{html.escape(str(summary.get('pool')))}</code>
 · model <code>{html.escape(str(summary.get('model')))}</code>
 · {summary.get('frames')} frames scored · {len(queue)} picked (budget {summary.get('budget')}{cap})
 · triggers {html.escape(', '.join(summary.get('triggers', [])))}</p>{err_html}
<table>{''.join(rows)}</table>"""
    path = Path(path)
    _atomic_text(path, page)
    return path
