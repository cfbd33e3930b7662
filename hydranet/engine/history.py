"""``RUN/history.jsonl`` and ``RUN/history.html``: what every iteration mined, bought, measured,
and whether it shipped. Rebuilt from the stage records (never appended), so a resumed run writes
each iteration exactly once."""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydranet.engine.records import STAGES, atomic_json

if TYPE_CHECKING:  # the loop imports this module; the type is only for annotations
    from hydranet.engine.vacation import Vacation


def history_rows(v: Vacation) -> list[dict[str, Any]]:
    """One summary row per iteration directory of ``v`` (1, 2, ... while ``iter_NNN`` exists), built
    from the stage records: mined frames, labeller and cost, added frames, suite metrics, gate, promotion."""
    rows = []
    it = 1
    while v.iter_dir(it).exists():
        rec = {s: v.record(it, s) for s in STAGES}
        row: dict[str, Any] = {"iteration": it, "complete": all(rec.values()),
                               "stages_done": [s for s in STAGES if rec[s]]}
        if rec["mine"]:
            row |= {"mined": rec["mine"]["picked"], "pool_frames": rec["mine"]["frames"],
                    "mined_conditions": rec["mine"].get("conditions", {})}
        if rec["label"]:
            row |= {"labeller": rec["label"]["labeller"], "label_cost": rec["label"]["cost"]}
        if rec["dataset"]:
            row["added_frames_total"] = rec["dataset"]["added_frames"]
        if rec["eval"]:
            row["suites"] = {s: {label: {t: _head(m) for t, m in tasks.items()} for label, tasks in d.items()}
                             for s, d in rec["eval"]["suites"].items()}
        if rec["gate"]:
            row |= {"gate_passed": rec["gate"]["passed"], "gate_failures": rec["gate"]["failures"]}
        if rec["promote"]:
            row["promoted"] = rec["promote"]["promoted"]
            row["checkpoint"] = rec["promote"].get("checkpoint")
        rows.append(row)
        it += 1
    return rows


def _head(metrics: dict[str, float]) -> dict[str, float | None]:
    """The headline metric (first key) as {name: value}, NaN as None (valid JSON)."""
    if not metrics:
        return {}
    k = next(iter(metrics))
    x = metrics[k]
    return {k: None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 4)}


def write_history(v: Vacation) -> list[dict[str, Any]]:
    """Write ``history.jsonl`` (atomically), the ``history.png`` chart, the HTML page and
    ``status.json`` under ``v.out``; returns the rows of ``history_rows``."""
    rows = history_rows(v)
    tmp = v.out / ".tmp-history.jsonl"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(v.out / "history.jsonl")
    chart = v.out / "history.png"
    _chart(rows, chart)
    _page(v, rows, chart)
    atomic_json(v.out / "status.json", {"iterations_done": sum(r["complete"] for r in rows),
                                        "current": v.current()})
    return rows


def _series(rows: list[dict[str, Any]]) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """Per suite/task.metric: "deployed" (the current model after each iteration, x = 0..n) and
    "candidate" (each iteration's trained model, x = 1..n)."""
    out: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for r in rows:
        it = r["iteration"]
        for suite, d in r.get("suites", {}).items():
            for task, m in d.get("candidate", {}).items():
                for metric, val in m.items():
                    key = f"{suite}/{task}.{metric}"
                    cur = d.get("current", {}).get(task, {}).get(metric)
                    s = out.setdefault(key, {"deployed": [], "candidate": []})
                    if cur is not None and not any(x == it - 1 for x, _ in s["deployed"]):
                        s["deployed"].append((it - 1, cur))
                    if val is not None:
                        s["candidate"].append((it, val))
                    after = val if r.get("promoted") else cur
                    if after is not None and "promoted" in r:
                        s["deployed"].append((it, after))
    return out


def _chart(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    series = _series(rows)
    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    for k, (name, s) in enumerate(series.items()):
        color = f"C{k % 10}"
        if s["deployed"]:
            pts = sorted(s["deployed"])
            ax.step([p[0] for p in pts], [p[1] for p in pts], where="post", color=color, label=f"{name} deployed")
        if s["candidate"]:
            ax.plot([p[0] for p in s["candidate"]], [p[1] for p in s["candidate"]], "o", color=color, mfc="none",
                    label=f"{name} candidate")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("iteration (0 = the starting model)")
    ax.set_ylabel("headline metric")
    ax.set_title("per suite: deployed model (line) and each iteration's candidate (circles)")
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _page(v: Vacation, rows: list[dict[str, Any]], chart: Path) -> None:
    blocks = []
    for r in rows:
        it = r["iteration"]
        head = ["suite", "task", "metric", "current", "candidate"]
        trs = []
        for suite, d in r.get("suites", {}).items():
            for task, m in d.get("candidate", {}).items():
                for metric, val in m.items():
                    cur = d.get("current", {}).get(task, {}).get(metric)
                    trs.append(f"<tr><td>{suite}</td><td>{task}</td><td>{metric}</td><td>{_f(cur)}</td>"
                               f"<td>{_f(val)}</td></tr>")
        gate = ("" if "gate_passed" not in r else "<p class=ok>gate passed</p>" if r["gate_passed"] else
                "<p class=bad>gate FAILED: " + html.escape("; ".join(
                    f"{f['suite']}/{f['task']}.{f['metric']}: {f['reason']}" for f in r["gate_failures"])) + "</p>")
        mined = v.iter_dir(it) / "queue" / "mined.png"
        img = f"<img src='{_uri(mined)}'>" if mined.exists() else ""
        blocks.append(f"<h2>iteration {it}{'' if r['complete'] else ' (unfinished)'}</h2>"
                      f"<p>mined {r.get('mined', '—')} of {r.get('pool_frames', '—')} pool frames "
                      f"{html.escape(json.dumps(r.get('mined_conditions', {})))} · labeller {r.get('labeller', '—')}"
                      f" · labels bought {r.get('label_cost', {}).get('total', '—')} · promoted "
                      f"{r.get('promoted', '—')}</p>{gate}<table><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr>"
                      f"{''.join(trs)}</table><h3>what was mined</h3>{img}")
    page = f"""<!doctype html><meta charset=utf-8><title>hydranet vacation history</title>
<style>body{{font:14px system-ui;margin:20px}}td,th{{padding:3px 8px;border-bottom:1px solid #ddd}}
.ok{{color:#070}}.bad{{color:#b00;font-weight:bold}}img{{max-width:100%}}</style>
<h1>Operation Vacation: {html.escape(str(v.out))}</h1>
<p>pipeline <code>{html.escape(v.pipe.path)}</code> · current model <code>{html.escape(str(v.current()))}</code></p>
<img src='{_uri(chart)}'>{''.join(blocks)}"""
    tmp = v.out / ".tmp-history.html"
    tmp.write_text(page)
    tmp.replace(v.out / "history.html")


def _f(x: Any) -> str:
    return "—" if x is None else f"{x:.4f}"
