"""The eight stages of one ``vacation`` iteration (see ``vacation.py``). Each takes the loop and
the iteration number, does its work, and returns the record the loop writes when it returns."""

from __future__ import annotations

import json
import math
import textwrap
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from hydranet.checkpoint import resolve_checkpoint, trunk_hash
from hydranet.datasets import dataset_setup
from hydranet.deploy import DeployedModel, export_checkpoint
from hydranet.engine.autolabel import AutoLabelConfig, autolabel_items
from hydranet.engine.label import oracle_items, write_labelled
from hydranet.engine.mine import build_triggers, mine
from hydranet.engine.pool import load_mining_model, model_tasks, open_pool
from hydranet.engine.queue import queue_summary, read_queue, write_queue, write_queue_html
from hydranet.engine.records import VacationRun, atomic_json
from hydranet.engine.triggers import parse_trigger_specs
from hydranet.eval import gate, load_suite, run_suite
from hydranet.json_files import dumps
from hydranet.train import (
    MANIFEST,
    config_from_dict,
    config_to_dict,
    load_train_config,
    open_source,
    run_subgraph,
    run_training,
    write_cache,
)


def _labelled_before(v: VacationRun, it: int) -> set[int]:
    done: set[int] = set()
    for k in range(1, it):
        rec = v.record(k, "label")
        if rec:
            done |= set(rec["indices"])
    return done


def _stage_mine(v: VacationRun, it: int) -> dict[str, Any]:
    """Mine stage: score the pool with the current model's triggers, pick ``budget`` diverse frames and
    write ``iter_NNN/queue/`` (``queue.jsonl``, ``queue.html``, ``mined.png``); frames labelled in earlier
    iterations are excluded. Returns the stage record."""

    m = v.pipe.mine
    cur = v.current()
    model = load_mining_model(cur["checkpoint"])
    pool = open_pool(v.pipe.pool)
    specs = parse_trigger_specs(m.triggers)
    trigs = build_triggers(specs, model_tasks(model))
    shadow = None
    shadow_path = cur.get("onnx") if m.shadow == "current" else m.shadow
    if shadow_path:

        shadow = DeployedModel(shadow_path)
    result = mine(model, pool, trigs, m.budget, oversample=m.oversample, batch_size=m.batch_size, radius=m.radius,
                  shadow=shadow, limit=m.limit, exclude=_labelled_before(v, it), max_per_scene=m.max_per_scene)
    assert result is not None  # single process
    qdir = v.iter_dir(it) / "queue"
    names = [n for n, _, _ in specs]
    settings = {"triggers": m.triggers, "oversample": m.oversample, "radius": m.radius, "limit": m.limit,
                "max_per_scene": m.max_per_scene}
    summary = queue_summary(result, v.pipe.pool, cur["checkpoint"], names, m.budget, settings)
    write_queue(qdir, result, summary)
    write_queue_html(qdir / "queue.html", result.queue, pool, summary, 40)
    _mined_picture(qdir / "mined.png", result.queue, pool)
    # The leading reason of each pick, counted: the first picks' reasons are often one and the same.
    leading = Counter(q["reason"].split(";")[0] for q in result.queue)
    reasons = [f"{r} (x{n})" for r, n in leading.most_common(3)]
    return {"queue": str(qdir / "queue.jsonl"), "picked": len(result.queue), "frames": result.frames,
            "indices": [q["index"] for q in result.queue], "trigger_errors": result.errors,
            "trigger_means": result.trigger_means, "conditions": _conditions(result.queue),
            "summary": f"{len(result.queue)} of {result.frames} frames queued; top reasons: {reasons}"}


def _conditions(queue: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for q in queue:
        c = q.get("metadata", {}).get("lighting")
        if c:
            out[c] = out.get(c, 0) + 1
    return out


def _mined_picture(path: Path, queue: list[dict[str, Any]], pool: Any, count: int = 8) -> None:
    """A contact sheet of the first ``count`` picks (front camera of each, rank and reason; ``queue.html`` lists
    every pick with its whole reason)."""
    from PIL import Image, ImageDraw

    picks = queue[:count]
    if not picks:
        Image.new("RGB", (320, 40), (30, 30, 30)).save(path)
        return
    tiles = []
    for q in picks:
        img = pool[q["index"]].images[0].permute(1, 2, 0).numpy()
        tile = Image.fromarray(img).resize((256, round(256 * img.shape[0] / img.shape[1])))
        canvas = Image.new("RGB", (256, tile.height + 43), (20, 20, 20))
        canvas.paste(tile, (0, 0))
        d = ImageDraw.Draw(canvas)
        d.text((4, tile.height + 2), f"#{q['rank']} {q['frame_id']}", fill=(255, 255, 255))
        # Two lines of the reason (about 42 characters fit a 256-pixel tile in PIL's default font).
        for k, line in enumerate(textwrap.wrap(q["reason"], 42, max_lines=2, placeholder=" ...")):
            d.text((4, tile.height + 15 + 13 * k), line, fill=(255, 220, 120))
        tiles.append(canvas)
    cols = min(4, len(tiles))
    rows = -(-len(tiles) // cols)
    sheet = Image.new("RGB", (cols * 258, rows * (tiles[0].height + 2)), (0, 0, 0))
    for k, t in enumerate(tiles):
        sheet.paste(t, ((k % cols) * 258, (k // cols) * (tiles[0].height + 2)))
    sheet.save(path)


def _stage_label(v: VacationRun, it: int) -> dict[str, Any]:
    """Label stage: label the queued frames with the oracle (the pool's labels) or the auto-labeller
    (teacher checkpoint, tracking and voting over a clip) into ``iter_NNN/labels``; returns the record
    with the label cost."""

    lab = v.pipe.label
    queue = read_queue(v.record(it, "mine")["queue"])  # type: ignore[index]
    pool = open_pool(v.pipe.pool, with_labels=True)
    out = v.iter_dir(it) / "labels"
    skipped: list[str] = []
    if lab.kind == "oracle":
        items = oracle_items(queue, pool, lab.labels)
    else:

        teacher = load_mining_model(lab.teacher)
        cfg = AutoLabelConfig(min_confidence=lab.min_confidence, min_frame_confidence=lab.min_frame_confidence,
                              clip_radius=lab.clip_radius)
        items = autolabel_items(queue, pool, teacher, str(lab.teacher), cfg, skipped)
    res = write_labelled(out, items, pool, {"labeller": lab.kind, "queue": str(v.iter_dir(it) / "queue"),
                                            "pool": v.pipe.pool}, overwrite=True)  # this stage's own folder
    return {**res, "labeller": lab.kind, "indices": [q["index"] for q in queue], "skipped_low_confidence": skipped,
            "summary": f"{res['frames']} frames labelled by {lab.kind}, {res['cost']['total']} labels bought"}


def _base_config(v: VacationRun) -> Any:
    """The pipeline's train config (its file, or the model checkpoint's) with ``train.overrides`` applied."""

    return load_train_config(v.pipe.train_config, list(v.pipe.train.overrides), v.pipe.model)


def _stage_dataset(v: VacationRun, it: int) -> dict[str, Any]:
    """Dataset stage: write ``iter_NNN/dataset_manifest.json``: the base datasets plus every labelled
    shard directory of iterations 1..``it``. Returns the record."""

    base = config_to_dict(_base_config(v))["data"]["datasets"]
    shards = []
    for k in range(1, it + 1):
        rec = v.record(k, "label")
        if rec and rec["frames"] > 0:
            shards.append({"name": f"engine_iter_{k:03d}", "path": rec["path"], "frames": rec["frames"],
                           "labeller": rec["labeller"]})
    data = {"iteration": it, "base": base, "shards": shards, "added_frames": sum(s["frames"] for s in shards)}
    (v.iter_dir(it) / "dataset_manifest.json").write_text(dumps(data))
    return {"path": str(v.iter_dir(it) / "dataset_manifest.json"), "shards": len(shards),
            "added_frames": data["added_frames"],
            "summary": f"base datasets {sorted(base)} + {len(shards)} labelled shard dirs "
                       f"({data['added_frames']} frames)"}


def train_config(v: VacationRun, it: int) -> Any:
    """The iteration's train config: ``_base_config`` plus the manifest's labelled shards as datasets,
    the stage's step count and learning rate, and a checkpoint every quarter of the steps."""

    tree = config_to_dict(_base_config(v))
    data = json.loads((v.iter_dir(it) / "dataset_manifest.json").read_text())
    for s in data["shards"]:
        tree["data"]["datasets"][s["name"]] = {"kind": "shards", "path": s["path"]}
    tree["train"]["steps"] = v.pipe.train.steps
    # Checkpoints often enough that a kill -9 loses at most a quarter of the stage's steps.
    every = tree["train"].get("ckpt_every") or v.pipe.train.steps
    tree["train"]["ckpt_every"] = max(1, min(every, v.pipe.train.steps // 4))
    if v.pipe.train.lr:
        tree["train"]["lr"] = v.pipe.train.lr
    return config_from_dict(tree, f"{v.pipe.path} (train config of iteration {it})")


def _stage_train(v: VacationRun, it: int) -> dict[str, Any]:
    """Train stage: fine-tune from the current checkpoint (or train heads on cached trunk features),
    resuming the run in ``iter_NNN/train`` when an earlier attempt started one (from step 0 before its first
    checkpoint); returns the candidate checkpoint path."""

    cfg = train_config(v, it)
    out = v.iter_dir(it) / "train"
    resume = (out / "config.yaml").is_file()
    start = v.current()["checkpoint"]
    t = v.pipe.train
    if t.mode == "finetune":

        summary = run_training(cfg, out, resume=resume, from_ckpt=start, tasks=t.tasks, progress=False,
                               resume_hint=_resume_hint(v))
    else:
        summary = _train_heads(v, it, cfg, out, start, resume)
    ckpt = resolve_checkpoint(out)
    return {"checkpoint": str(ckpt), "mode": t.mode, "steps": t.steps, "resumed": resume,
            "final_loss": summary.get("final_loss") if isinstance(summary, dict) else None,
            "summary": f"{t.mode} {t.steps} steps from {start} -> {ckpt}"}


def _train_heads(v: VacationRun, it: int, cfg: Any, out: Path, start: str, resume: bool) -> Any:
    """Head-only: cache the trunk features of this iteration's dataset once, train heads on them."""
    from torch.utils.data import ConcatDataset

    cache = v.iter_dir(it) / "cache"
    if not (cache / MANIFEST).is_file():
        model = load_mining_model(start)
        parts = [open_source(ds) for _, ds in sorted(cfg.data.datasets.items())]
        frames = ConcatDataset(parts)
        write_cache(model, frames, cache, trunk_hash=trunk_hash(model), setup=dataset_setup(frames), overwrite=True)
    return run_subgraph(cfg, out, from_ckpt=start, tasks=v.pipe.train.tasks, cache=cache, resume=resume,
                        progress=False, resume_hint=_resume_hint(v))


def _resume_hint(v: VacationRun) -> str:
    """The command that resumes the whole run: a vacation resumes at its first unfinished stage, the train stage
    from its own last checkpoint (resuming only the train stage would leave the pipeline behind)."""
    return f"hydranet vacation --config {v.pipe.path or 'PIPELINE.yaml'} --out {v.out}"


def _stage_eval(v: VacationRun, it: int) -> dict[str, Any]:
    """Eval stage: run every suite on the current and the candidate model (same frames) and return
    their metrics, the gate rows (``GateRow`` fields; paired frame bootstrap, see ``hydranet.eval.gate``) and
    per suite the frames evaluated and the bootstrap's resamples and confidence (``gate_suites``)."""

    e = v.pipe.eval
    cur = load_mining_model(v.current()["checkpoint"])
    cand = load_mining_model(v.record(it, "train")["checkpoint"])  # type: ignore[index]
    suites, rows, setup = {}, [], {}
    for path in e.suites:
        suite = load_suite(path)
        runs = run_suite({"current": cur, "candidate": cand}, suite, batch_size=e.batch_size, frames=e.frames)
        suites[suite.name] = {label: {t: te.metrics for t, te in run.tasks.items()} for label, run in runs.items()}
        rows += [asdict(r) for r in gate(runs["current"], runs["candidate"])]
        setup[suite.name] = {"frames": len(runs["current"].frames), "resamples": suite.bootstrap,
                             "confidence": suite.confidence}
    return {"suites": suites, "gate_rows": rows, "gate_suites": setup,
            "summary": ", ".join(f"{s}: " + " ".join(f"{t} {_headline(m)}" for t, m in d["candidate"].items())
                                 for s, d in suites.items())}


def _headline(metrics: dict[str, float]) -> str:
    """A task's headline (its first metric) for a one-line summary; "—" when these frames left it undefined."""
    value = next(iter(metrics.values()), math.nan)
    return f"{value:.3f}" if math.isfinite(value) else "— (undefined on these frames)"


def _stage_gate(v: VacationRun, it: int) -> dict[str, Any]:
    """Gate stage: passed when no gate row of the eval stage failed; failures are listed with their reason.
    ``suites`` holds, per suite, every row of the eval stage's gate (``GateRow`` fields: current model as
    ``baseline``, ``candidate``, oriented ``delta``, interval ``low``..``high``, ``tolerance``, ``status``,
    ``reason``, ``frames``, ``not_significant``) with the suite's frames, resamples and confidence;
    the top-level ``not_significant`` lists those rows (``suite/task.metric``)."""
    ev = v.record(it, "eval")
    rows = ev["gate_rows"]  # type: ignore[index]
    setup = ev.get("gate_suites", {})  # type: ignore[union-attr]  # absent in eval records of older versions
    suites = {name: {**setup.get(name, {}), "rows": [r for r in rows if r["suite"] == name]}
              for name in dict.fromkeys(r["suite"] for r in rows)}
    failures = [{"suite": r["suite"], "task": r["task"], "metric": r["metric"], "baseline": r["baseline"],
                 "candidate": r["candidate"], "reason": r["reason"]} for r in rows if r["status"] == "fail"]
    weak = [f"{r['suite']}/{r['task']}.{r['metric']}" for r in rows if r.get("not_significant")]
    words = "; ".join(f"suite {f['suite']}: {f['task']}.{f['metric']} {f['reason']}" for f in failures)
    noise = (f"; {len(weak)} drop(s) beyond tolerance not significant at these frames ({', '.join(weak)})"
             if weak else "")
    skipped = sum(r["status"] == "skipped" for r in rows)
    noise += f"; {skipped} row(s) skipped (no head, or no ground truth on these frames)" if skipped else ""
    return {"passed": not failures, "failures": failures, "not_significant": weak, "current": v.current()["checkpoint"],
            "candidate": v.record(it, "train")["checkpoint"], "suites": suites,  # type: ignore[index]
            "summary": ("passed" if not failures else f"FAILED — {words}") + noise}


def _stage_export(v: VacationRun, it: int) -> dict[str, Any]:
    """Export stage: export the candidate to ``iter_NNN/export/model.onnx`` when the gate passed and
    export is enabled."""
    if not v.record(it, "gate")["passed"]:  # type: ignore[index]
        return {"onnx": None, "summary": "skipped: the gate failed"}
    if not v.pipe.export.enabled:
        return {"onnx": None, "summary": "skipped: export disabled"}

    path = v.iter_dir(it) / "export" / "model.onnx"
    export_checkpoint(v.record(it, "train")["checkpoint"], path, v.pipe.export.tasks)  # type: ignore[index]
    return {"onnx": str(path), "summary": f"exported {path}"}


def _stage_promote(v: VacationRun, it: int) -> dict[str, Any]:
    """Promote stage: when the gate passed, point ``current.json`` at the candidate checkpoint (and its
    ONNX export) atomically, so the next iteration mines with it."""

    gate_rec = v.record(it, "gate")
    if not gate_rec["passed"]:  # type: ignore[index]
        return {"promoted": False, "reason": gate_rec["summary"], "summary": "not promoted: " + gate_rec["summary"]}  # type: ignore[index]
    cand = v.record(it, "train")["checkpoint"]  # type: ignore[index]
    atomic_json(v.out / "current.json", {"checkpoint": v.run_relative(cand),  # relative: the run may move
                                         "onnx": v.run_relative(v.record(it, "export")["onnx"]),  # type: ignore[index]
                                         "iteration": it})
    return {"promoted": True, "checkpoint": cand, "summary": f"promoted {cand}"}


# Each stage of ``hydranet.engine.records.STAGES``, in that order: ``run(v, it) -> record``.
RUNNERS: dict[str, Callable[[VacationRun, int], dict[str, Any]]] = {
    "mine": _stage_mine, "label": _stage_label, "dataset": _stage_dataset, "train": _stage_train, "eval": _stage_eval,
    "gate": _stage_gate, "export": _stage_export, "promote": _stage_promote,
}
