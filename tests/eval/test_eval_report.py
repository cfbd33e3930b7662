"""`hydranet report`: one self-contained HTML file that a real headless browser renders.

The browser part needs Debian's chromium (`apt-get install -y chromium`); without it the test is
skipped, unless HYDRANET_REQUIRE_BROWSER=1 (CI) makes a missing browser a failure.
"""

import base64
import io
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from hydranet.cli import app
from hydranet.eval.charts import bar_chart, heatmap, line_chart

PROBE = ('<script>window.addEventListener("load",()=>{const im=[...document.images];'
         'document.body.setAttribute("data-images",im.length);'
         'document.body.setAttribute("data-broken",im.filter(i=>!i.complete||i.naturalWidth===0).length);});'
         "</script></body>")


def browser():
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("HYDRANET_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium not installed (apt-get install -y chromium)")
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    return exe


def chromium(exe, *args):
    return subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args],
                          capture_output=True, text=True, timeout=120)


def image_counts(exe, html_path):
    """(images, broken images) as the browser sees them after the load event."""
    probe = html_path.with_name("probe.html")
    probe.write_text(html_path.read_text().replace("</body>", PROBE))
    dom = chromium(exe, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()).stdout
    m = re.search(r'data-images="(\d+)" data-broken="(\d+)"', dom)
    assert m, dom[:500]
    return int(m.group(1)), int(m.group(2))


def test_charts_are_wellformed_svg():
    import xml.etree.ElementTree as ET

    for svg in (line_chart({"car": ([0, 0.5, 1], [1, 0.8, 0.2])}, "PR", "recall", "precision"),
                line_chart({}, "empty", "x", "y"),
                bar_chart(["a", "b"], {"x": [0.5, float("nan")], "y": [2.0, 1.0]}, "bars", "v"),
                heatmap([[3, 1], [0, 2]], ["r", "g"], ["r", "g"], "confusion")):
        root = ET.fromstring(svg)
        assert root.tag.endswith("svg") and len(root) > 3


@pytest.mark.slow
def test_report_is_self_contained_and_renders(tiny_checkpoint, tiny_suite, tmp_path):
    out = tmp_path / "report.html"
    r = CliRunner().invoke(app, ["report", str(tiny_checkpoint), "--suite", str(tiny_suite), "-o", str(out),
                                 "--frames", "2", "--samples", "2", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    html = out.read_text()
    # self-contained: no external resources of any kind
    assert not re.search(r'(src|href)="(?!data:|#)', html), re.findall(r'(?:src|href)="[^"]{0,40}', html)[:5]
    assert "<link" not in html and "@import" not in html
    for needle in ("precision-recall", "AbsRel vs distance", "state confusion", "worst first", "<svg"):
        assert needle in html, needle
    uris = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(uris) == 2 * 2 * 3  # 2 frames x (gt, pred) x 3 draw groups
    # full size by a click in place: Chromium refuses to open a data: URL link in a new tab
    assert 'href="data:' not in html and html.count("onclick=\"this.classList.toggle('full')\"") == len(uris)
    for u in uris:
        img = Image.open(io.BytesIO(base64.b64decode(u)))
        img.load()
        assert img.width > 200 and np.asarray(img).std() > 5  # a drawn frame, not an empty canvas

    exe = browser()
    shot = tmp_path / "shot.png"
    res = chromium(exe, f"--screenshot={shot}", "--window-size=1400,2400", out.as_uri())
    assert shot.exists(), res.stderr[-2000:]
    px = np.asarray(Image.open(shot).convert("RGB")).astype(np.float32)
    assert px.std() > 20  # not blank
    assert (px.reshape(-1, 3).max(1) - px.reshape(-1, 3).min(1) > 60).mean() > 0.01  # coloured charts/frames
    n, broken = image_counts(exe, out)
    assert n == len(uris) and broken == 0
    # the probe can fail: a corrupt image is reported as broken
    bad = tmp_path / "bad.html"
    bad.write_text(html.replace("</body>", '<img src="data:image/png;base64,AAAA"></body>'))
    assert image_counts(exe, bad) == (len(uris) + 1, 1)
