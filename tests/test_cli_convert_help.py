"""``hydranet convert KIND --help`` lists KIND's own options (from its pydantic options model) with
their descriptions; ``convert --help`` alone names the registered kinds."""

import pytest
from typer.testing import CliRunner

from hydranet.cli import app

runner = CliRunner()


@pytest.mark.parametrize(("kind", "expected"), [
    ("bdd100k", ["--root", "the folder holding images/ and labels/", "--split", "--images", "--hfov-deg",
                 "nominal horizontal field of view", "--camera-position", "[default: 65.0]"]),
    ("nuscenes", ["--dataroot", "--version", "--cameras", "--filter-empty", "--min-lidar-depth"]),
    ("kitti", ["--root", "--depth", "--ids"]),
    ("frames", ["--index", "the FRAMES.jsonl file"]),
])
def test_convert_kind_help_lists_the_source_options(kind, expected):
    res = runner.invoke(app, ["convert", kind, "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert f"Options of source '{kind}'" in res.output
    for text in expected + ["--class-map", "--out"]:
        assert text in res.output, (kind, text)
    assert "--image-size tuple" not in res.output  # convert's own --image-size is not listed twice


def test_convert_help_without_kind_names_the_kinds_and_unknown_kind_is_said():
    res = runner.invoke(app, ["convert", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "Registered kinds: bdd100k" in res.output and "Options of source" not in res.output
    res = runner.invoke(app, ["convert", "--out", "x", "nope", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "Unknown source kind 'nope'" in res.output


def test_convert_source_frames_option_limits_like_limit(tmp_path):
    import numpy as np
    from PIL import Image

    frames = tmp_path / "jpegs"
    frames.mkdir()
    for k in range(3):
        Image.fromarray(np.full((72, 128, 3), 40 * k, np.uint8)).save(frames / f"f{k}.jpg")
    res = runner.invoke(app, ["convert", "bdd100k", "--root", str(frames), "--frames", "2",
                              "--out", str(tmp_path / "s")])
    assert res.exit_code == 0, res.output
    assert "wrote 2 samples" in res.output  # not silently all 3


def test_an_image_size_over_the_pixel_limit_is_refused_before_anything_runs(tmp_path):
    """Before: --image-size 100000x100000 allocated until the machine ran out of memory."""
    from typer.testing import CliRunner

    from hydranet.cli import app

    res = CliRunner().invoke(app, ["convert", "frames", "--index", str(tmp_path / "frames.jsonl"), "--image-size",
                                   "100000x100000", "--out", str(tmp_path / "out")])
    assert res.exit_code == 2 and "over the limit of" in " ".join(res.output.split())
    assert not (tmp_path / "out").exists()
