"""``history.html``: readable at a glance. Before, it printed the current model as a Python dict, the mined
conditions as raw JSON, "promoted True", labels bought without a unit and no change column."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from hydranet.engine.history import _chart, _page, _panels, _series

ROWS = [
    {"iteration": 1, "complete": True, "mined": 2, "pool_frames": 8, "mined_conditions": {"day": 2, "night": 1},
     "labeller": "oracle", "label_cost": {"frames": 2, "objects": 71, "dense_maps": 14, "total": 87},
     "suites": {"night": {"current": {"drivable": {"miou": 0.25}, "depth": {"abs_rel": 0.30}},
                          "candidate": {"drivable": {"miou": 0.26}, "depth": {"abs_rel": 0.28}}}},
     "gate_passed": True, "gate_failures": [], "gate_not_significant": ["night/depth.abs_rel"], "promoted": True},
    {"iteration": 2, "complete": True, "mined": 2, "pool_frames": 8, "mined_conditions": {"dusk": 2},
     "labeller": "auto", "label_cost": {"frames": 2, "objects": 10, "dense_maps": 2, "total": 14},
     "suites": {"night": {"current": {"drivable": {"miou": 0.26}, "depth": {"abs_rel": 0.28}},
                          "candidate": {"drivable": {"miou": 0.20}, "depth": {"abs_rel": 0.29}}}},
     "gate_passed": False, "gate_failures": [{"suite": "night", "task": "drivable", "metric": "miou",
                                              "reason": "regressed by 0.06 > tolerance 0.02"}], "promoted": False},
]


def fake_vacation(out: Path) -> SimpleNamespace:
    return SimpleNamespace(out=out, pipe=SimpleNamespace(path=str(out / "pipeline.yaml")),
                           iter_dir=lambda it: out / f"iter_{it:03d}",
                           current=lambda: {"checkpoint": str(out / "iter_001" / "ckpt"), "onnx": None,
                                            "iteration": 1})


def test_history_page_reads_like_a_report(tmp_path):
    chart = tmp_path / "history.png"
    _chart(ROWS, chart)
    assert chart.stat().st_size > 5000
    _page(fake_vacation(tmp_path), ROWS, chart)
    page = (tmp_path / "history.html").read_text()
    assert "{'checkpoint'" not in page and '{"day"' not in page and "promoted True" not in page
    assert f"promoted in iteration 1: checkpoint <code>{tmp_path / 'iter_001' / 'ckpt'}</code>" in page
    assert "2 of 2 iteration(s) complete,\n1 promoted" in page
    assert "(day 2, night 1)" in page and "87 annotations (2 frames, 71 objects, 14 dense maps)" in page
    assert "href='#iter-2'" in page and "id='iter-2'" in page  # summary table links each iteration
    # oriented as the gate prints it: abs_rel 0.30 -> 0.28 is +0.0200 better (lower is better)
    assert "+0.0100 better" in page and "+0.0200 better" in page and "-0.0200 better" not in page
    assert "-0.0600 worse" in page and "gate FAILED: night/drivable.miou" in page
    assert "passed as not significant at these frames" in page and "night/depth.abs_rel</p>" in page
    assert page.count("data:image/png;base64,") == 1  # the chart (no mined.png in the fake iterations)


def test_chart_has_one_panel_per_metric_and_one_colour_per_suite(tmp_path):
    """Before, every suite/task.metric was one line on one axis (13 series in a shipped run, tab20's pale pairs
    alike and overlapping near 0.95). Now: one panel per task.metric, one colour per suite, the same in each."""
    rows = [{**r, "suites": {**r["suites"], "day": r["suites"]["night"]}} for r in ROWS]
    panels, colors = _panels(_series(rows))
    assert list(panels) == ["drivable.miou", "depth.abs_rel"] and all(list(p) == ["night", "day"]
                                                                    for p in panels.values())
    assert len(set(colors.values())) == 2 and list(colors) == ["night", "day"]
    assert panels["drivable.miou"]["night"]["candidate"] == [(1, 0.26), (2, 0.20)]
    _chart(rows, tmp_path / "history.png")
    assert (tmp_path / "history.png").stat().st_size > 5000
