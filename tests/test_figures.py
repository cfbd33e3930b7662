"""tools/figures.py: the figures in README.md and docs/*.md are what their committed JSON results render to;
a block that disagrees with its JSON fails here (fix: ``make figures``)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("hydranet_figures", ROOT / "tools" / "figures.py")
assert _spec is not None and _spec.loader is not None
figures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(figures)


def test_readme_and_docs_agree_with_their_json_results():
    stale = figures.stale_blocks()
    assert not stale, "these blocks differ from docs/results/*.json: run `make figures`\n" + "\n".join(stale)


def test_every_result_and_template_is_used():
    text = "".join(doc.read_text() for doc in figures.DOCS)
    blocks = {m.group("name") for m in figures.BLOCK.finditer(text)}
    templates = {p.stem for p in figures.TEMPLATES.glob("*.md")}
    assert templates == blocks, f"templates without a block: {templates - blocks}; blocks without: {blocks - templates}"
    used = "".join(p.read_text() for p in figures.TEMPLATES.glob("*.md"))
    for result in figures.RESULTS.glob("*.json"):
        assert "{" + result.stem + "." in used, f"{result.name} is rendered nowhere"
        assert "NaN" not in result.read_text() and "Infinity" not in result.read_text(), f"{result.name}: not JSON"


def test_a_wrong_figure_is_found_and_rendering_fixes_it(tmp_path, monkeypatch):
    (tmp_path / "results").mkdir()
    (tmp_path / "figures").mkdir()
    (tmp_path / "results" / "demo.json").write_text(json.dumps(
        {"trained": {"lanes": {"f1": 0.8912}, "traffic_light": {"recall/red": None}},
         "meta": {"seconds": {"train": 456.0}, "busy": None, "frames": [3, 9]}}))
    (tmp_path / "figures" / "t.md").write_text(
        "F1 {demo.trained.lanes.f1:.3f}, red {demo.trained.traffic_light[recall/red]:.3f}, "
        "{demo.meta.seconds.train:min} min, {demo.trained.lanes.f1:met>=0.9}{demo.meta.busy:? (busy: |)}, "
        "frame {demo.meta.frames[1]}\n")
    monkeypatch.setattr(figures, "TEMPLATES", tmp_path / "figures")
    monkeypatch.setattr(figures, "ROOT", tmp_path)
    doc = tmp_path / "README.md"
    doc.write_text("intro\n<!-- figures:t -->\nF1 0.999 (typed by hand)\n<!-- /figures -->\nend\n")
    assert figures.stale_blocks([doc], tmp_path / "results") == ["README.md: block figures:t"]
    figures.render([doc], tmp_path / "results")
    assert doc.read_text() == ("intro\n<!-- figures:t -->\nF1 0.891, red n/a, 7.6 min, not met, frame 9\n"
                               "<!-- /figures -->\nend\n")
    assert figures.stale_blocks([doc], tmp_path / "results") == []
    (tmp_path / "figures" / "t.md").write_text("{demo.trained.lanes.precision}\n")
    with pytest.raises(figures.FigureError, match="demo.trained.lanes has no 'precision'"):
        figures.render([doc], tmp_path / "results")


def test_a_benchmark_result_is_the_last_json_object_it_printed():
    text = 'loading...\n{"step": 1}\nprogress {not json}\n{\n "mAP": 0.4,\n "x": [1, 2]\n}\n'
    assert figures.last_json_object(text) == {"mAP": 0.4, "x": [1, 2]}


def test_no_number_is_typed_into_the_readme_benchmark_table():
    typed = figures.typed_figures()
    assert not typed, "typed figures in the README's benchmark table (record and render them):\n" + "\n".join(typed)


def test_a_typed_number_in_the_benchmark_table_is_found_wherever_it_is_written(tmp_path, monkeypatch):
    (tmp_path / "figures").mkdir()
    monkeypatch.setattr(figures, "TEMPLATES", tmp_path / "figures")
    monkeypatch.setattr(figures, "ROOT", tmp_path)
    header = "| benchmark | what | measured | goal |\n|---|---|---|---|\n"
    # Rendered fields, names with digits (2D, fp32, INT8, AP50), the first cell's arguments and a goal's
    # target are not typed figures.
    (tmp_path / "figures" / "t.md").write_text(
        header + "| `b.py --steps 300 --height 96` | {r.cams}-camera 2D mAP, fp32 vs INT8, AP50 | "
        "{r.x:.2f} frames/s, load {r.load:.1f} | ≥ 5 — {r.x:met>=5}; ≤ 1e-3; fp32 ≤ 0.7× |\n")
    doc = tmp_path / "README.md"
    doc.write_text("text 12\n<!-- figures:t -->\nanything\n<!-- /figures -->\n")
    assert figures.typed_figures(doc) == []
    # A number typed into the template, or into a row the README adds outside the block, is found.
    (tmp_path / "figures" / "t.md").write_text(
        header + "| `b.py` | on 8×128 frames | {r.x:.2f} frames/s (another run 3,000) | ≥ 5 (met: 5.4) |\n")
    doc.write_text("<!-- figures:t -->\nx\n<!-- /figures -->\n| `c.py` | c | 0.78× | ≤ 0.6× |\n\nafter 7\n")
    assert figures.typed_figures(doc) == [
        "README.md: benchmark table, row `b.py`, column 'what': typed number(s) 8, 128",
        "README.md: benchmark table, row `b.py`, column 'measured': typed number(s) 3,000",
        "README.md: benchmark table, row `b.py`, column 'goal': typed number(s) 5.4",
        "README.md: benchmark table, row `c.py`, column 'measured': typed number(s) 0.78"]


def test_lists_join_and_millions_take_a_precision(tmp_path, monkeypatch):
    (tmp_path / "results").mkdir()
    (tmp_path / "figures").mkdir()
    (tmp_path / "results" / "m.json").write_text(json.dumps({"widths": [16, 32], "levels": ["p3", "p4"],
                                                             "params": 511367, "nested": [[1]]}))
    (tmp_path / "figures" / "t.md").write_text("{m.widths:join} | {m.levels:join=+} | {m.params:M.2f} | {m.params:M}")
    monkeypatch.setattr(figures, "TEMPLATES", tmp_path / "figures")
    monkeypatch.setattr(figures, "ROOT", tmp_path)
    assert figures.render_template("t", figures._Results(tmp_path / "results")) == "16, 32 | p3+p4 | 0.51 M | 0.5 M"
    (tmp_path / "figures" / "t.md").write_text("{m.nested:join}")
    with pytest.raises(figures.FigureError, match="m.nested: a list"):
        figures.render_template("t", figures._Results(tmp_path / "results"))
