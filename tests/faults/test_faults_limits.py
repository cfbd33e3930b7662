"""Class 7 of issue 22: inputs big enough to hurt are refused where they enter, with one line and a limit.

An image header claiming 20,000 x 20,000 pixels is refused before a pixel is decoded (``hydranet.limits.
check_image_pixels``; ``hydranet --max-image-pixels N`` or ``HYDRANET_MAX_IMAGE_PIXELS`` raise the limit); JSON
and YAML nested 100,000 deep end in one line instead of a ``RecursionError``.
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
from faults_kit import cli, error_line, frame_line, hydranet_cmd, write_bdd, write_frames, write_kitti
from PIL import Image

from hydranet.limits import MAX_IMAGE_PIXELS_DEFAULT


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` (8-bit RGB) and that holds almost no pixel data: what a
    decompression bomb or a corrupt header looks like to a reader."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def bomb(path: Path) -> Path:
    path.write_bytes(png_header(20_000, 20_000))
    return path


def sources(tmp_path: Path) -> dict[str, list]:
    frames = write_frames(tmp_path / "fleet", [frame_line(0)])
    bomb(tmp_path / "fleet" / "img0.png")
    kitti = write_kitti(tmp_path / "kitti", np.eye(3))
    bomb(kitti / "training" / "image_2" / "000001.png")
    bdd = write_bdd(tmp_path / "bdd", [{"name": "a.jpg", "labels": []}])
    (bdd / "images" / "100k" / "val" / "a.jpg").unlink()
    bomb(bdd / "images" / "100k" / "val" / "a.png")
    mask = write_frames(tmp_path / "masked", [frame_line(0, labels={"drivable": {"front": "mask.png"}})])
    bomb(tmp_path / "masked" / "mask.png")
    return {"frames": ["frames", "--index", frames], "kitti": ["kitti", "--root", kitti],
            "bdd100k": ["bdd100k", "--root", bdd], "frames mask": ["frames", "--index", mask]}


@pytest.mark.parametrize("source", ["frames", "kitti", "bdd100k", "frames mask"])
def test_an_image_header_claiming_20000x20000_is_refused_with_the_limit(tmp_path, source):
    args = sources(tmp_path)[source]
    res = cli("convert", *args, "--out", tmp_path / "out", code=2)
    line = error_line(res)
    assert "400,000,000 pixels exceeds the limit of" in line and ".png" in line, line
    assert f"{MAX_IMAGE_PIXELS_DEFAULT:,}" in line and "--max-image-pixels" in line
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_the_image_limit_is_an_option(tmp_path, monkeypatch):
    """``HYDRANET_MAX_IMAGE_PIXELS`` sets the limit, ``hydranet --max-image-pixels N`` overrides it (tested at a
    small scale: a 48x24 frame against limits of 1,000 and 2,000 pixels)."""
    index = write_frames(tmp_path / "fleet", [frame_line(0)])
    monkeypatch.setenv("HYDRANET_MAX_IMAGE_PIXELS", "1000")
    res = cli("convert", "frames", "--index", index, "--out", tmp_path / "a", code=2)
    assert "48x24 = 1,152 pixels exceeds the limit of 1,000 pixels" in error_line(res)
    cli("--max-image-pixels", "2000", "convert", "frames", "--index", index, "--out", tmp_path / "b", code=0)
    # The limit is the inputs': hydranet's own pictures (their text glyphs pass PIL's guard too) are drawn under
    # any limit (a new-user trial: PIL's guard, lowered with it, refused the title of `show`).
    cli("--max-image-pixels", "2000", "show", "--data", tmp_path / "b", "--out", tmp_path / "b.png", code=0)
    assert (tmp_path / "b.png").stat().st_size > 1000


@pytest.mark.parametrize("value", ["abc", "0", "-5", "1.5", "inf"])
@pytest.mark.parametrize("command", [["version"], ["zoo"]])
def test_a_bad_image_limit_in_the_environment_is_one_line_exit_2_for_every_command(monkeypatch, value, command):
    """``HYDRANET_MAX_IMAGE_PIXELS`` is read at start-up, before any command's guard: a value that is no whole
    number >= 1 was a rich traceback (exit 1) from every command, ``version`` included."""
    monkeypatch.setenv("HYDRANET_MAX_IMAGE_PIXELS", value)
    line = error_line(cli(*command, code=2))
    assert f"HYDRANET_MAX_IMAGE_PIXELS={value!r}" in line and "whole number of pixels >= 1" in line, line
    assert f"{MAX_IMAGE_PIXELS_DEFAULT:,}" in line
    # The option, when given, is the limit: the environment is not read.
    cli("--max-image-pixels", "5000", *command, code=0)


@pytest.mark.parametrize("args", [["zoo", "--help"], ["train", "--help"], ["--help"]])
def test_help_works_whatever_the_image_limit_in_the_environment(monkeypatch, args):
    """A new user's trial: ``HYDRANET_MAX_IMAGE_PIXELS=abc hydranet zoo --help`` was the variable's error, exit 2
    (the root callback read it before the command's --help). The variable is read when a command runs; the
    command itself still refuses it in one line, exit 2 (test above)."""
    monkeypatch.setenv("HYDRANET_MAX_IMAGE_PIXELS", "abc")
    res = cli(*args, code=0)
    assert "Usage:" in res.output and "HYDRANET_MAX_IMAGE_PIXELS='abc'" not in res.output, res.output
    assert "error:" not in res.output


def test_a_bad_image_limit_in_the_environment_through_the_real_entry_point():
    """The installed entry point (typer's pretty tracebacks are on there, not under CliRunner): one stderr line."""
    run = subprocess.run(hydranet_cmd("version"), capture_output=True, text=True, timeout=120,
                         env={**os.environ, "HYDRANET_MAX_IMAGE_PIXELS": "abc"})
    assert run.returncode == 2, (run.returncode, run.stderr)
    assert run.stderr.strip().splitlines() == [
        "error: environment variable HYDRANET_MAX_IMAGE_PIXELS='abc': expected a whole number of pixels >= 1 "
        f"(unset: {MAX_IMAGE_PIXELS_DEFAULT:,})"], run.stderr


@pytest.mark.parametrize(("name", "value", "accepted"), [
    ("HYDRANET_NET_TIMEOUT_S", "abc", "a number of seconds > 0"), ("HYDRANET_NET_TIMEOUT_S", "inf", "> 0"),
    ("HYDRANET_NET_TIMEOUT_S", "nan", "> 0"), ("HYDRANET_NET_RETRIES", "-2", "a whole number of tries >= 1"),
    ("HYDRANET_NET_RETRIES", "2.5", "whole number")])
def test_the_network_limits_in_the_environment_name_what_they_accept(monkeypatch, name, value, accepted):
    from hydranet.limits import LimitError, net_retries, net_timeout_s

    monkeypatch.setenv(name, value)
    with pytest.raises(LimitError, match=rf"environment variable {name}='{value}': expected .*{re.escape(accepted)}"):
        (net_timeout_s if name.endswith("_S") else net_retries)()


def test_a_huge_image_inside_a_shard_is_refused_naming_the_sample(tmp_path, dataset):
    """A forged shard whose PNG member claims 20,000 x 20,000: ``ShardDataset`` refuses the sample."""
    from hydranet.data.array_codec import CodecError, decode_png

    with pytest.raises(CodecError, match="exceeds the limit"):
        decode_png(png_header(20_000, 20_000), "RGB")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "ok.png")
    assert decode_png((tmp_path / "ok.png").read_bytes(), "RGB").shape == (4, 4, 3)


DEEP = "[" * 100_000 + "]" * 100_000


def test_json_and_yaml_nested_100000_deep_are_one_line(tmp_path, dataset):
    import shutil

    data = shutil.copytree(dataset, tmp_path / "data")
    (data / "manifest.json").write_text(DEEP)
    assert "nested" in error_line(cli("data-info", data, code=2))
    deep_yaml = tmp_path / "deep.yaml"
    deep_yaml.write_text("a: " + "[" * 100_000)
    assert "nested too deep" in error_line(cli("train", "-c", deep_yaml, "-o", tmp_path / "r", code=2))
    assert "nested too deep" in " ".join(cli("eval", tmp_path, "--suite", deep_yaml, code=2).output.split())
    state = tmp_path / "ckpt" / "state.json"
    state.parent.mkdir()
    state.write_text(DEEP)
    assert "unreadable checkpoint state" in " ".join(cli("export", state.parent, "-o", tmp_path / "m.onnx",
                                                         code=2).output.split())
    index = tmp_path / "f.jsonl"
    index.write_text(json.dumps(frame_line(0)) + "\n" + DEEP + "\n")
    assert "f.jsonl:2: JSON nested more than 100 levels deep" in error_line(
        cli("convert", "frames", "--index", index, "--out", tmp_path / "o", code=2))


def test_the_readme_states_the_limits_the_code_enforces():
    """README's limits are rendered (tools/figures.py) from docs/results/limits.json, which is what
    ``benchmarks/limits.py`` prints from ``hydranet.limits``; the module's own table states the same numbers,
    and no other doc restates one by hand (a changed constant cannot leave a stale figure anywhere)."""
    import importlib.util
    import re

    from faults_kit import REPO

    import hydranet.limits as limits

    recorded = json.loads((REPO / "docs" / "results" / "limits.json").read_text())
    recorded.pop("_recorded")
    assert recorded == json.loads(json.dumps(limits.documented_limits())), \
        "re-record: python tools/figures.py record limits -- python benchmarks/limits.py, then make figures"
    spec = importlib.util.spec_from_file_location("faults_figures", REPO / "tools" / "figures.py")
    figures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(figures)  # type: ignore[union-attr]
    readme = (REPO / "README.md").read_text()
    block = re.search(r"<!-- figures:limits -->\n(.*?)<!-- /figures -->", readme, re.S)
    assert block and block.group(1) == figures.render_template("limits", figures._Results(figures.RESULTS))
    d = limits.documented_limits()
    for stated in (f"{d['image_pixels']['max']:,} (", f"{d['json_depth']['max']} levels",
                   f"{d['bev_cells']['side']} x {d['bev_cells']['side']})", f"{d['suite']['max_seeds']:,} worlds",
                   f"{d['suite']['max_frames']:,} per suite", f"{d['network']['timeout_s']:g} s per request",
                   f"{d['network']['tries']} tries per request", f"at least {d['lidar_points']['min']:,}"):
        assert stated in limits.__doc__, f"hydranet/limits.py's table does not state {stated!r}"
    by_hand = re.compile(r"more than [\d,]+ (pixels|seeds)|[\d.]+ s deadline|\d+ tries|fewer than [\d,]+ points")
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        text = re.sub(r"<!-- figures:limits -->.*?<!-- /figures -->", "", doc.read_text(), flags=re.S)
        assert not by_hand.search(text), f"{doc.name} restates a limit by hand: {by_hand.search(text).group(0)!r}"
