"""``RUN/history.jsonl`` and ``RUN/history.html``: what every iteration mined, bought, measured,
and whether it shipped. Rebuilt from the stage records (never appended), so a resumed run writes
each iteration exactly once."""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any

from hydranet.engine.records import STAGES, VacationRun, atomic_json, describe_current
from hydranet.eval import lower_is_better
from hydranet.json_files import dumps
from hydranet.viz import SERIES_COLORS


def _history_rows(v: VacationRun) -> list[dict[str, Any]]:
    """One summary row per iteration directory of ``v`` (1, 2, ... while ``iter_NNN`` exists), built
    from the stage records: mined frames, labeller and cost, added frames, suite metrics, gate, promotion, and
    ``stage_seconds`` (wall seconds of each finished stage's last run; a stage resumed after a kill counts only the
    run that finished it) with their sum ``seconds``."""
    rows = []
    it = 1
    while v.iter_dir(it).exists():
        rec = {s: v.record(it, s) for s in STAGES}
        row: dict[str, Any] = {"iteration": it, "complete": all(rec.values()),
                               "stages_done": [s for s in STAGES if rec[s]]}
        row["stage_seconds"] = {s: rec[s]["seconds"] for s in STAGES if rec[s] and "seconds" in rec[s]}
        row["seconds"] = round(sum(row["stage_seconds"].values()), 2)
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
            row |= {"gate_passed": rec["gate"]["passed"], "gate_failures": rec["gate"]["failures"],
                    "gate_not_significant": rec["gate"].get("not_significant", [])}
        if rec["promote"]:
            row["promoted"] = rec["promote"]["promoted"]
            row["checkpoint"] = rec["promote"].get("checkpoint")
        rows.append(row)
        it += 1
    return rows


def _head(metrics: dict[str, float]) -> dict[str, float | None]:
    """The headline metric (first key) as {name: value}, NaN as None (valid JSON). Not rounded: the page's Δ is
    taken from these values and must be the gate's to the last printed digit."""
    if not metrics:
        return {}
    k = next(iter(metrics))
    x = metrics[k]
    return {k: None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)}


def write_history(v: VacationRun) -> list[dict[str, Any]]:
    """Write ``history.jsonl`` (atomically), the ``history.png`` chart, the HTML page and
    ``status.json`` under ``v.out``; returns the rows of ``_history_rows``."""
    rows = _history_rows(v)
    tmp = v.out / ".tmp-history.jsonl"
    tmp.write_text("".join(dumps(r, indent=None) + "\n" for r in rows))
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


# The smallest y range of a history panel: metrics live in [0, 1] (errors such as abs_rel near it) and suites
# tolerate drops of a few hundredths, so a change of 0.02 takes a fifth of the panel and 0.001 stays flat.
_MIN_SPAN = 0.1


def _panels(series: dict[str, dict[str, list[tuple[int, float]]]]
            ) -> tuple[dict[str, dict[str, dict[str, list[tuple[int, float]]]]], dict[str, str]]:
    """``_series`` regrouped for small multiples: one panel per ``task.metric`` holding one entry per suite,
    and one colour per suite (``SERIES_COLORS``, in order of appearance) that is the same in every panel."""
    panels: dict[str, dict[str, dict[str, list[tuple[int, float]]]]] = {}
    for key, s in series.items():
        suite, metric = key.split("/", 1)
        panels.setdefault(metric, {})[suite] = s
    suites = list(dict.fromkeys(suite for p in panels.values() for suite in p))
    return panels, {suite: SERIES_COLORS[k % len(SERIES_COLORS)] for k, suite in enumerate(suites)}


def _chart(rows: list[dict[str, Any]], path: Path) -> None:
    """``history.png``: one panel per task's headline metric (its own y scale, so a change of a few hundredths
    shows), one colour per suite; the deployed model as a step line, each iteration's candidate as a circle."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    panels, colors = _panels(_series(rows))
    cols = min(4, max(1, len(panels)))
    nrows = max(1, -(-len(panels) // cols))
    last = max([r["iteration"] for r in rows], default=1)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.4 * cols, 2.5 * nrows + 0.9), dpi=100, layout="constrained",
                             squeeze=False)
    for ax, (metric, by_suite) in zip(axes.flat, panels.items(), strict=False):
        for suite, s in by_suite.items():
            if s["deployed"]:
                pts = sorted(s["deployed"])
                ax.step([p[0] for p in pts], [p[1] for p in pts], where="post", color=colors[suite], lw=1.8)
            if s["candidate"]:
                ax.plot([p[0] for p in s["candidate"]], [p[1] for p in s["candidate"]], "o", color=colors[suite],
                        mfc="none", ms=7, mew=1.6)
        better = "lower is better" if lower_is_better(metric.rsplit(".", 1)[-1]) else "higher is better"
        ax.set_title(f"{metric}\n({better})", fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(nbins=4))
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.set_xlim(-0.3, last + 0.3)
        ax.margins(y=0.25)
        low, high = ax.get_ylim()
        if high - low < _MIN_SPAN:  # its own scale, but a change of a thousandth must not fill the panel
            mid = (low + high) / 2
            ax.set_ylim(mid - _MIN_SPAN / 2, mid + _MIN_SPAN / 2)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    if panels:
        handles = [Line2D([], [], color=c, lw=1.8, label=f"suite {suite}") for suite, c in colors.items()] + [
            Line2D([], [], color="black", lw=1.8, label="deployed model (line)"),
            Line2D([], [], color="black", marker="o", mfc="none", ls="none", label="the iteration's candidate")]
        fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8, frameon=False)
        fig.suptitle("headline metric per task, per iteration (0 = the starting model)", fontsize=11)
    else:
        axes[0, 0].text(0.5, 0.5, "no evaluated iteration yet", ha="center", va="center",
                        transform=axes[0, 0].transAxes)
    fig.savefig(path)
    plt.close(fig)


def _uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


CSS = """body{font:14px system-ui,sans-serif;margin:20px;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:6px 0 12px}td,th{padding:3px 10px;border-bottom:1px solid #ddd;text-align:left}
th{background:#f0f0f0}td.n{text-align:right;font-variant-numeric:tabular-nums}.meta{color:#555}
.ok{color:#070}.bad{color:#b00;font-weight:bold}.up{color:#070}.down{color:#b00}img{max-width:100%}
code{font-size:12px;word-break:break-all}"""


def _conditions(counts: dict[str, int]) -> str:
    """``{"day": 2, "night": 1}`` as ``day 2, night 1``."""
    return ", ".join(f"{html.escape(str(k))} {v}" for k, v in counts.items()) or "—"


def _cost(cost: dict[str, int] | None) -> str:
    """Labels bought, in annotations, with what they were."""
    if not cost:
        return "—"
    return (f"{cost.get('total', '—')} annotations ({cost.get('frames', 0)} frames, {cost.get('objects', 0)} "
            f"objects, {cost.get('dense_maps', 0)} dense maps)")


def _yes_no(x: Any) -> str:
    return "—" if x is None else "<span class=ok>yes</span>" if x else "<span class=bad>no</span>"


def _gate(r: dict[str, Any]) -> str:
    if "gate_passed" not in r:
        return "—"
    return "<span class=ok>passed</span>" if r["gate_passed"] else "<span class=bad>FAILED</span>"


def _delta(metric: str, cur: float | None, cand: float | None) -> str:
    """The change oriented as the gate prints it (Δ > 0 = better: ``current − candidate`` for an error metric),
    with a word that says which."""
    if cur is None or cand is None:
        return "—"
    d = (cur - cand) if lower_is_better(metric) else (cand - cur)
    if d == 0:
        return "0"
    return f"<span class={'up' if d > 0 else 'down'}>{d:+.4f} {'better' if d > 0 else 'worse'}</span>"


def _summary(rows: list[dict[str, Any]]) -> str:
    """One line per iteration: what it mined and bought, the gate, the promotion."""
    head = ["iteration", "mined / pool frames", "conditions mined", "labeller", "labels bought (annotations)",
            "gate", "promoted", "stages' time (s)"]
    trs = "".join(
        f"<tr><td class=n><a href='#iter-{r['iteration']}'>{r['iteration']}</a>"
        f"{'' if r['complete'] else ' (unfinished)'}</td>"
        f"<td class=n>{r.get('mined', '—')} / {r.get('pool_frames', '—')}</td>"
        f"<td>{_conditions(r.get('mined_conditions', {}))}</td><td>{html.escape(str(r.get('labeller', '—')))}</td>"
        f"<td class=n>{r.get('label_cost', {}).get('total', '—')}</td><td>{_gate(r)}</td>"
        f"<td>{_yes_no(r.get('promoted'))}</td><td class=n>{r.get('seconds', 0):.0f}</td></tr>" for r in rows)
    return f"<table><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr>{trs}</table>"


def _page(v: VacationRun, rows: list[dict[str, Any]], chart: Path) -> None:
    blocks = []
    for r in rows:
        it = r["iteration"]
        head = ["suite", "task", "metric", "current (deployed)", "candidate", "Δ (> 0 = better)"]
        trs = []
        for suite, d in r.get("suites", {}).items():
            for task, m in d.get("candidate", {}).items():
                for metric, val in m.items():
                    cur = d.get("current", {}).get(task, {}).get(metric)
                    trs.append(f"<tr><td>{html.escape(suite)}</td><td>{html.escape(task)}</td>"
                               f"<td>{html.escape(metric)}</td><td class=n>{_f(cur)}</td><td class=n>{_f(val)}</td>"
                               f"<td class=n>{_delta(metric, cur, val)}</td></tr>")
        gate = ("" if "gate_passed" not in r else "<p class=ok>gate passed</p>" if r["gate_passed"] else
                "<p class=bad>gate FAILED: " + html.escape("; ".join(
                    f"{f['suite']}/{f['task']}.{f['metric']}: {f['reason']}" for f in r["gate_failures"])) + "</p>")
        if r.get("gate_not_significant"):
            gate += ("<p class=meta>passed as not significant at these frames (a drop beyond tolerance whose "
                     "interval holds 0; see <code>gate.json</code>): "
                     f"{html.escape(', '.join(r['gate_not_significant']))}</p>")
        mined = v.iter_dir(it) / "queue" / "mined.png"
        img = (f"<h3>what was mined</h3><img alt='frames mined in iteration {it}' src='{_uri(mined)}'>"
               if mined.exists() else "")
        table = (f"<table><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr>{''.join(trs)}</table>" if trs else
                 "<p class=meta>not evaluated yet</p>")
        blocks.append(f"<h2 id='iter-{it}'>iteration {it}{'' if r['complete'] else ' (unfinished)'}</h2>"
                      f"<p>mined {r.get('mined', '—')} of {r.get('pool_frames', '—')} pool frames "
                      f"({_conditions(r.get('mined_conditions', {}))}) · labeller "
                      f"{html.escape(str(r.get('labeller', '—')))} · labels bought {_cost(r.get('label_cost'))} · "
                      f"promoted {_yes_no(r.get('promoted'))}</p>{gate}{table}{img}")
    done = sum(r["complete"] for r in rows)
    promoted = sum(bool(r.get("promoted")) for r in rows)
    page = f"""<!doctype html><html lang=en><meta charset=utf-8><title>hydranet vacation history</title>
<style>{CSS}</style>
<h1>Operation Vacation: {html.escape(str(v.out))}</h1>
<p class=meta>pipeline <code>{html.escape(v.pipe.path)}</code> · {done} of {len(rows)} iteration(s) complete,
{promoted} promoted</p><p>current model, {describe_current(v.current(), _code)}</p>
{_summary(rows)}<img alt='headline metrics per iteration' src='{_uri(chart)}'>{''.join(blocks)}</html>"""
    tmp = v.out / ".tmp-history.html"
    tmp.write_text(page)
    tmp.replace(v.out / "history.html")


def _code(path: str) -> str:
    return f"<code>{html.escape(path)}</code>"


def _f(x: Any) -> str:
    return "—" if x is None else f"{x:.4f}"
