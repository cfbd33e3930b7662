"""``hydranet report``: ONE self-contained HTML file (inline CSS, SVG charts, base64 PNG frames).

Per suite: the pass/fail table (with per-scenario columns), one chart per task (PR curves for 2D
and 3D detection, IoU per class, lane F1 per kind, depth error vs distance, the traffic-light
confusion matrix) and sample frames ordered worst-first — each frame rendered twice with
``hydranet.viz``: ground truth and prediction, the 8 cameras laid out as on the car plus the BEV.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import math
from html import escape
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from hydranet.data import collate
from hydranet.eval.charts import bar_chart, heatmap, line_chart
from hydranet.eval.loop import Evaluator, predictor_of
from hydranet.eval.runner import Check, SuiteRun, TaskEval, Worlds, dead_camera_mask, worst_frames
from hydranet.metrics import (
    DepthMetric,
    Detection2DMetric,
    Detection3DMetric,
    LaneF1,
    SegmentationIoU,
    TrafficLightMetric,
)
from hydranet.viz import Views

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{margin:0 0 4px}h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:36px}
.meta{color:#666;font-size:13px}.badge{display:inline-block;padding:2px 8px;border-radius:10px;color:#fff;
font-size:12px;font-weight:bold}.pass{background:#2e7d32}.fail{background:#c62828}.skipped{background:#f9a825}
table{border-collapse:collapse;margin:8px 0 16px;font-size:13px;background:#fff}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:right}th{background:#f0f0f0}td.l,th.l{text-align:left}
.charts{display:flex;flex-wrap:wrap;gap:12px}.charts figure{margin:0;background:#fff;border:1px solid #ddd;padding:4px}
.frame{background:#fff;border:1px solid #ddd;margin:12px 0;padding:8px}.frame figure{overflow-x:auto}
.frame img{max-width:100%;display:block;cursor:zoom-in}.frame img.full{max-width:none;cursor:zoom-out}
.pair{display:flex;flex-wrap:wrap;gap:8px}.pair figure{margin:0;flex:1 1 560px}figcaption{font-size:12px;color:#555}
nav a{margin-right:12px}
"""


def _png_data_uri(img: Image.Image, max_width: int = 900) -> str:
    """``data:image/png;base64,...`` of ``img`` (downscaled to ``max_width``, palette PNG)."""
    if img.width > max_width:
        img = img.resize((max_width, round(img.height * max_width / img.width)), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    # a 256-colour palette halves the file with no visible loss on rendered frames and overlays
    img.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _fmt(x: Any) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:.4f}" if isinstance(x, float) else escape(str(x))


def _badge(status: str, reason: str = "") -> str:
    badge = f'<span class="badge {status}">{status.upper() if status == "fail" else status}</span>'
    return badge + (f' <span class="meta">{escape(reason)}</span>' if reason else "")


def _task_charts(te: TaskEval) -> list[str]:
    """The charts that explain one task's numbers (inline SVG strings)."""
    m, out = te.metric, []
    if isinstance(m, Detection2DMetric):
        out.append(line_chart(m.pr_curves(0.5), f"{te.name}: precision-recall @ IoU 0.5", "recall", "precision"))
        cams = [k.split("/", 1)[1] for k in te.metrics if k.startswith("ap/") and k[3:] not in m.classes]
        out.append(bar_chart(cams, {"AP": [te.metrics[f"ap/{c}"] for c in cams]}, f"{te.name}: AP per camera", "AP",
                             width=max(420, 60 * len(cams))))
    elif isinstance(m, Detection3DMetric):
        out.append(line_chart(m.pr_curves(2.0), f"{te.name}: precision-recall @ 2 m", "recall", "precision"))
        thr = [f"{t:g} m" for t in m.thresholds]
        out.append(bar_chart(list(m.classes), {"AP": [te.metrics.get(f"ap/{c}", math.nan) for c in m.classes]},
                             f"{te.name}: AP per class (mean over thresholds)", "AP"))
        out.append(bar_chart(thr, {"mAP": [te.metrics[f"ap@{t:g}m"] for t in m.thresholds]},
                             f"{te.name}: mAP per distance threshold", "mAP"))
    elif isinstance(m, DepthMetric):
        bins = [k.split("/", 1)[1] for k in te.metrics if k.startswith("abs_rel/")]
        out.append(bar_chart(bins, {"AbsRel": [te.metrics[f"abs_rel/{b}"] for b in bins]},
                             f"{te.name}: AbsRel vs distance", "AbsRel", xlabel="ground-truth depth"))
        out.append(bar_chart(bins, {"RMSE": [te.metrics[f"rmse/{b}"] for b in bins]},
                             f"{te.name}: RMSE vs distance", "RMSE (m)", xlabel="ground-truth depth"))
    elif isinstance(m, TrafficLightMetric):
        conf = m.confusion()
        out.append(heatmap(conf.tolist(), m.states, m.states, f"{te.name}: state confusion (matched lights)"))
    elif isinstance(m, SegmentationIoU):
        out.append(bar_chart(list(m.classes), {"IoU": [te.metrics[f"iou/{c}"] for c in m.classes]},
                             f"{te.name}: IoU per class", "IoU", width=max(420, 70 * len(m.classes))))
    elif isinstance(m, LaneF1):
        kinds = list(m.kinds[1:])
        out.append(bar_chart(kinds, {"F1": [te.metrics[f"f1/{k}"] for k in kinds]},
                             f"{te.name}: F1 per marking kind (±{m.tolerance_px} px)", "F1"))
    return out


def _table(run: SuiteRun, checks: list[Check]) -> str:
    suite = run.suite
    head = "".join(f"<th>{escape(s)}</th>" for s in suite.scenarios)
    rows = []
    for task in suite.tasks:
        te = run.tasks.get(task)
        if te is None:
            rows.append(f'<tr><td class="l">{escape(task)}</td><td class="l" colspan="4">model has no head for '
                        f"this task</td><td>{_badge('skipped')}</td>{'<td></td>' * len(suite.scenarios)}</tr>")
            continue
        mine = [c for c in checks if c.task == task]
        metrics = [te.headline] + [c.metric for c in mine if c.metric != te.headline]
        for metric in metrics:
            c = next((c for c in mine if c.metric == metric), None)
            scen = "".join(f"<td>{_fmt(te.per_scenario.get(s, {}).get(metric, math.nan))}</td>"
                           for s in suite.scenarios)
            rows.append(f'<tr><td class="l">{escape(task)}</td><td class="l">{escape(metric)}</td>'
                        f"<td>{_fmt(te.metrics.get(metric, math.nan))}</td><td>{len(te.frames)}</td>"
                        f"<td>{escape(c.threshold) if c else ''}</td>"
                        f"<td class=\"l\">{_badge(c.status, c.reason) if c else ''}</td>"
                        f"{scen}</tr>")
    return (f'<table><tr><th class="l">task</th><th class="l">metric</th><th>value</th><th>frames</th>'
            f"<th>threshold</th><th class=\"l\">result</th>{head}</tr>{''.join(rows)}</table>")


def _all_metrics(te: TaskEval) -> str:
    cells = "".join(f'<tr><td class="l">{escape(k)}</td><td>{_fmt(v)}</td></tr>' for k, v in te.metrics.items())
    return (f"<details><summary>all {escape(te.name)} metrics ({len(te.metrics)})</summary>"
            f"<table>{cells}</table></details>")


# Tasks drawn together on one composite; each group gets its own ground-truth/prediction pair so
# dense overlays (depth, drivable) do not hide the boxes. Tasks not listed get a pair of their own.
_DRAW_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("objects", ("detection2d", "traffic_light", "objects3d", "bev_semantic")),
    ("road", ("drivable", "lanes")),
    ("depth", ("depth",)),
)


def _draw_groups(tasks: list[str]) -> list[tuple[str, list[str]]]:
    """Group ``tasks`` into the report's picture panels (objects, road, depth, then one panel per other
    task); empty groups are dropped."""
    groups = [(name, [t for t in members if t in tasks]) for name, members in _DRAW_GROUPS]
    known = {t for _, members in _DRAW_GROUPS for t in members}
    groups += [(t, [t]) for t in tasks if t not in known]
    return [(n, ts) for n, ts in groups if ts]


@torch.no_grad()
def render_frame(model: Any, worlds: Worlds, run: SuiteRun, frame: int, device: str | torch.device,
                 scale: int | None = None) -> list[tuple[str, Image.Image, Image.Image]]:
    """``(group, ground truth, prediction)`` composites of one frame, one per draw group, predicted as the suite's run
    scored it: through the same dead cameras, and on a video suite (or for a model without a single-frame path)
    streamed, the frames before it in its sequence replayed first so its memory is the one it was scored with."""
    fid = run.frames[frame]
    sample = worlds.sample(fid)
    names = list(run.tasks)
    predictor = predictor_of(model)
    # as run_suite builds its evaluators: a video suite streams every model
    evaluator = Evaluator(predictor, {n: predictor.tasks[n] for n in names}, score=False,
                          stream=True if run.suite.sequence is not None else None)
    history = _sequence_before(worlds, run, frame, sample) if evaluator.streamer is not None else []
    for earlier in history:
        batch = collate([earlier]).to(device)
        evaluator.step(batch, camera_valid=dead_camera_mask(run.suite, batch))
    batch = collate([sample]).to(device)
    prediction = evaluator.step(batch, camera_valid=dead_camera_mask(run.suite, batch))
    grid = worlds(fid.scenario, fid.seed).setup.grid
    scale = scale or (2 if sample.images.shape[-2] <= 160 else 1)  # small renders are upscaled to stay legible
    decoded = {n: _cpu(prediction.decoded(n)[0]) for n in names}
    targets = {n: _cpu(prediction.targets(n)[0]) for n in names}
    result = []
    for group, tasks in _draw_groups(names):
        gt, pred = Views.from_sample(sample, grid, scale=scale), Views.from_sample(sample, grid, scale=scale)
        for name in tasks:
            task = predictor.tasks[name]
            if targets[name] is not None:
                task.draw(gt, targets[name], ground_truth=True)
            task.draw(pred, decoded[name], ground_truth=False)
        label = f"{group} ({' + '.join(tasks)})" if len(tasks) > 1 else tasks[0]
        result.append((label, gt.compose(title=f"ground truth: {label} | {fid}"),
                       pred.compose(title=f"prediction: {label} | {fid}")))
    return result


def _sequence_before(worlds: Worlds, run: SuiteRun, frame: int, sample: Any) -> list[Any]:
    """The samples of ``run.frames`` the suite streamed before ``frame`` in its sequence, oldest first: back to the
    first one after which the scene id stayed and the frame index grew (where ``Streamer`` starts a sequence)."""
    history: list[Any] = []
    later, k = sample, frame
    while k > 0:
        earlier = worlds.sample(run.frames[k - 1])
        if earlier.scene_id != later.scene_id or earlier.frame_index >= later.frame_index:
            break
        history.append(earlier)
        later, k = earlier, k - 1
    return history[::-1]


def _cpu(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    if isinstance(x, dict):
        return {k: _cpu(v) for k, v in x.items()}
    return x


def _frames_html(model: Any, run: SuiteRun, samples: int, device: str | torch.device) -> str:
    if samples <= 0:
        return ""
    worlds = Worlds(run.suite, {"model": model})
    parts = [f"<h3>Sample frames, worst first ({min(samples, len(run.frames))} of {len(run.frames)})</h3>",
             '<p class="meta">Badness = mean over tasks of the frame\'s own headline (1 − score, or the error for '
             "error metrics, clipped to [0, 1]). Left: ground truth, right: prediction.</p>"]
    per_task = {name: dict(zip(te.frames, te.frame_scores(), strict=True)) for name, te in run.tasks.items()}
    for rank, (frame, badness) in enumerate(worst_frames(run, samples), 1):
        name = escape(str(run.frames[frame]))
        scores = ", ".join(f"{escape(n)} {escape(run.tasks[n].headline)} {_fmt(float(s[frame]))}"
                           for n, s in per_task.items() if frame in s)
        parts.append(f'<div class="frame"><b>#{rank}</b> {name} — badness {badness:.3f}'
                     f'<div class="meta">{scores}</div>')
        for label, gt, pred in render_frame(model, worlds, run, frame, device):
            # Each frame is embedded at full size, shown fitted to its column; a click toggles it to pixel for pixel
            # in place. (A link to a data: URL in a new tab is refused by Chromium: "Not allowed to navigate top frame
            # to data URL".)
            figures = []
            for side, img in (("ground truth", gt), ("prediction", pred)):
                figures.append(f'<figure><img alt="{side} {escape(label)} {name}" '
                               f'src="{_png_data_uri(img, max_width=1 << 30)}" '
                               f'onclick="this.classList.toggle(\'full\')" title="click: full size">'
                               f"<figcaption>{side}: {escape(label)} (click: full size)</figcaption></figure>")
            parts.append(f'<div class="pair">{"".join(figures)}</div>')
        parts.append("</div>")
    return "".join(parts)


def build_report(model: Any, runs: list[SuiteRun], checks: list[list[Check]], checkpoint: str = "",
                 samples: int = 4, device: str | torch.device = "cpu") -> str:
    """The report as one HTML string."""
    n_fail = sum(c.status == "fail" for cs in checks for c in cs)
    overall = "fail" if n_fail else "pass"
    nav = " ".join(f'<a href="#suite-{escape(r.suite.name)}">{escape(r.suite.name)}</a>' for r in runs)
    body = [f"<h1>hydranet evaluation report {_badge(overall)}</h1>",
            f'<div class="meta">checkpoint <code>{escape(checkpoint)}</code> · '
            f"{dt.datetime.now().isoformat(timespec='seconds')} · {len(runs)} suite(s) · "
            f"{sum(len(r.frames) for r in runs)} frames · {n_fail} failed threshold(s)</div><nav>{nav}</nav>"]
    for run, cs in zip(runs, checks, strict=True):
        s = run.suite
        status = "fail" if any(c.status == "fail" for c in cs) else "pass"
        body.append(f'<h2 id="suite-{escape(s.name)}">suite {escape(s.name)} {_badge(status)}</h2>'
                    f'<div class="meta">{escape(s.description)} · {len(run.frames)} frames over '
                    f"{len(s.scenarios)} scenario(s), {s.seeds_text()} · "
                    f"{run.seconds:.1f} s · file <code>{escape(s.path)}</code></div>")
        body.append(_table(run, cs))
        charts = [c for te in run.tasks.values() for c in _task_charts(te)]
        body.append('<div class="charts">' + "".join(f"<figure>{c}</figure>" for c in charts) + "</div>")
        body.append("".join(_all_metrics(te) for te in run.tasks.values()))
        body.append(_frames_html(model, run, samples, device))
    return ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>hydranet evaluation report</title>'
            f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>")


def write_html_report(path: str | Path, model: Any, runs: list[SuiteRun], checks: list[list[Check]],
                 checkpoint: str = "", samples: int = 4, device: str | torch.device = "cpu") -> int:
    """Write the report atomically; returns its size in bytes."""
    html = build_report(model, runs, checks, checkpoint, samples, device).encode("utf-8")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(html)
    tmp.replace(path)
    return len(html)


