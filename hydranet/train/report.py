"""What a training run shows a person: prediction-vs-ground-truth pictures and a metrics table.

Pictures use ``hydranet.viz.Views`` (8 cameras laid out as on the car + a BEV panel) and each
task's own ``draw``: for every chosen frame, ``frame_<i>.png`` stacks the model's outputs of all
tasks but dense depth (top) over the ground truth (bottom), and ``frame_<i>_<task>.png`` does the same per task,
which is easier to read than seven tasks on one canvas.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw
from torch import nn
from torch.utils.data import Dataset

from hydranet.data import LIGHT_STATES, collate
from hydranet.eval import Evaluator
from hydranet.json_files import write_json
from hydranet.setup import Setup, class_names
from hydranet.tasks import Task
from hydranet.viz import Views


def _frame_contents(sample: Any, setup: Setup | None = None) -> set[str]:
    """What a frame shows a reader of the pictures: its object classes (2D and 3D labels, named by the data's
    ``setup`` vocabularies; default the world's five) and its traffic-light states (``"light red"``...), from
    its labels."""
    seen: set[str] = set()
    for task in ("detection2d", "objects3d"):
        lab = sample.labels.get(task)
        if lab is not None:
            names = class_names(setup, task)
            seen |= {names[int(c)] for c in lab["classes"].tolist()}
    lights = sample.labels.get("traffic_light")
    if lights is not None:
        seen |= {f"light {LIGHT_STATES[int(s)]}" for s in lights["state"].tolist()}
    return seen


def choose_frames(dataset: Dataset, frames: int, count: int,
                  setup: Setup | None = None) -> tuple[list[int], set[str]]:
    """``count`` of the first ``frames`` frames of ``dataset`` that together show every object class (of the
    ``setup``'s vocabularies, default the world's five) and every light state they hold (greedy set cover on
    ``_frame_contents``; ties go to a scene not shown yet, then to the frame with more kinds and more labelled
    objects, then the earlier one). Returns the indices (sorted) and what no frame holds, e.g.
    ``{"light yellow"}``, so the caller can say so."""
    wanted = {*class_names(setup, "detection2d"), *class_names(setup, "objects3d"),
              *(f"light {s}" for s in LIGHT_STATES)}
    contents, sizes, scenes = [], [], []
    for i in range(frames):
        sample = dataset[i]
        contents.append(_frame_contents(sample, setup))
        sizes.append(sum(len(v["classes"]) for k, v in sample.labels.items() if k in ("detection2d", "objects3d")))
        scenes.append(getattr(sample, "scene_id", i))
    chosen: list[int] = []
    left = wanted & set().union(*contents) if contents else set()
    while len(chosen) < min(count, frames):
        seen = {scenes[c] for c in chosen}  # once all is covered, another scene shows more than the next frame
        best = max((i for i in range(frames) if i not in chosen),
                   key=lambda i: (len(contents[i] & left), scenes[i] not in seen, len(contents[i]), sizes[i], -i))
        chosen.append(best)
        left -= contents[best]
    missing = wanted - set().union(*(contents[i] for i in chosen)) if chosen else wanted
    return sorted(chosen), missing


def _stack(top: Image.Image, bottom: Image.Image) -> Image.Image:
    w = max(top.width, bottom.width)
    out = Image.new("RGB", (w, top.height + bottom.height + 6), (40, 40, 44))
    out.paste(top, (0, 0))
    out.paste(bottom, (0, top.height + 6))
    return out


@torch.no_grad()
def draw_predictions(model: nn.Module, tasks: dict[str, Task], dataset: Dataset, indices: list[int], grid: Any,
                     out_dir: Path, device: torch.device | str = "cpu", scale: int = 2,
                     per_task: bool = True) -> list[Path]:
    """Draw prediction (top) over ground truth (bottom) for ``dataset[i]``, ``i`` in ``indices``, with each task's
    ``draw`` on the camera views and the BEV panel (``grid``, ego frame); puts ``model`` in eval mode.

    Writes ``frame_<i>.png`` (all tasks but dense depth) and, with ``per_task``, ``frame_<i>_<task>.png`` under
    ``out_dir``; returns the paths written. ``scale``: pixel scale of the views.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    names = sorted(tasks)
    predictor = Evaluator(model, tasks, score=False, device=device)
    written = []
    for i in indices:
        prediction = predictor.step(collate([dataset[i]]))
        batch = prediction.batch
        decoded = {t: prediction.decoded(t)[0] for t in names}
        truth = {t: prediction.targets(t)[0] for t in names}

        def panel(which: dict[str, Any], gt: bool, only: list[str], title: str, batch: Any = batch) -> Image.Image:
            views = Views.from_batch(batch.to("cpu"), 0, grid, scale=scale)
            for t in only:
                if which[t] is not None:
                    tasks[t].draw(views, _cpu(which[t]), ground_truth=gt)
            return views.compose(title=title)

        scene = f"{batch.scene_id[0]}#{int(batch.frame_index[0])}"
        # Dense depth would cover every camera and hide the rest: it gets its own picture only.
        combined = [t for t in names if t != "depth"] or names
        label = "all tasks" if combined == names else "all tasks but depth"
        img = _stack(panel(decoded, False, combined, f"prediction: {label}  ({scene})"),
                     panel(truth, True, combined, f"ground truth: {label}"))
        path = out_dir / f"frame_{i:05d}.png"
        img.save(path)
        written.append(path)
        if per_task:
            for t in names:
                missing = " (label absent for this frame)" if truth[t] is None else ""
                img = _stack(panel(decoded, False, [t], f"{t}: prediction  ({scene})"),
                             panel(truth, True, [t], f"{t}: ground truth{missing}"))
                p = out_dir / f"frame_{i:05d}_{t}.png"
                img.save(p)
                written.append(p)
    return written


def _cpu(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.cpu()
    if isinstance(x, dict):
        return {k: _cpu(v) for k, v in x.items()}
    return x


def contact_sheet(paths: list[Path], out: Path, width: int = 1600) -> Path:
    """The all-task pictures scaled into one image (what a README shows)."""
    imgs = [Image.open(p) for p in paths]
    scaled = [im.resize((width, round(im.height * width / im.width)), Image.BILINEAR) for im in imgs]
    sheet = Image.new("RGB", (width, sum(im.height for im in scaled) + 6 * (len(scaled) - 1)), (40, 40, 44))
    y = 0
    for im in scaled:
        sheet.paste(im, (0, y))
        y += im.height + 6
    ImageDraw.Draw(sheet)
    sheet.save(out)
    return out


def _fmt(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.3f}" if abs(v) < 1000 else f"{v:.0f}"


def _metrics_table(results: dict[str, dict[str, float]], baseline: dict[str, dict[str, float]] | None,
                  tasks: dict[str, Task], extra_keys: int = 3) -> str:
    """Markdown: per task the headline metric (first key) trained vs untrained, plus a few others."""
    head = "| task | headline metric | untrained | trained | better is | other metrics (trained) |"
    lines = [head, "|---|---|---|---|---|---|"]
    for t in sorted(results):
        m = results[t]
        if not m:
            continue
        key = next(iter(m))
        base = (baseline or {}).get(t, {}).get(key)
        others = ", ".join(f"{k} {_fmt(v)}" for k, v in list(m.items())[1:1 + extra_keys])
        better = "higher" if tasks[t].higher_is_better else "lower"
        lines.append(f"| {t} | {key} | {_fmt(base)} | {_fmt(m[key])} | {better} | {others} |")
    return "\n".join(lines)


def write_metrics_report(out_dir: Path, results: dict, baseline: dict | None, tasks: dict[str, Task],
                         summary: dict[str, Any], meta: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``out_dir/metrics.md`` (trained vs untrained table, ``_metrics_table``) and ``out_dir/metrics.json``
    (``{"trained", "untrained", "train": summary, "meta": meta}``; standard JSON, an undefined metric is
    ``null``); returns both paths."""
    table = _metrics_table(results, baseline, tasks)
    md = out_dir / "metrics.md"
    secs = meta.get("seconds") or {}
    reused = "train_reused_run" in secs  # the finished run of an earlier demo, reused: its own training time
    trained = (f"{secs['train_reused_run'] or 0:.0f} s of training in an earlier run, reused" if reused else
               f"{secs.get('train') or 0:.0f} s of training")
    streamed = ("Scored (and drawn) frame by frame, the video memory reset at every frame; the streamed figures of "
                "the held-out scenes are in video.json." if meta.get("temporal") else None)
    lines = [
        "# hydranet demo: metrics on held-out frames", "",
        f"{meta.get('eval_frames')} held-out frames (scenes not seen in training), after "
        f"{summary.get('steps')} optimizer steps ({trained} on "
        f"{meta.get('device')}, {meta.get('threads')} threads, global batch {meta.get('global_batch')}); "
        f"skipped non-finite steps: {summary.get('skipped_steps')}.",
        "'untrained' is the same network at initialisation: the gap is what training bought.",
        *([streamed] if streamed else []), "",
        table, "",
    ]
    md.write_text("\n".join(lines))
    js = write_json(out_dir / "metrics.json", {"trained": results, "untrained": baseline, "train": summary,
                                               "meta": meta})
    return md, js
