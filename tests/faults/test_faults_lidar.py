"""A lidar file cut short exactly at a point boundary (issue 22, class 5): it still parses, so the file alone
cannot tell. Where the source records a count the reader checks it (nuScenes: ``sample_annotation.num_lidar_pts``
of the keyframe's boxes, which the devkit counted on this very sweep); where it records none (KITTI
``velodyne/*.bin``) a sweep under ``hydranet.limits.MIN_LIDAR_POINTS_DEFAULT`` points is refused, naming the
file, and ``min_lidar_points`` lowers it for a sparser sensor.

The real files (``../shared/realdata``) are read in place or linked, never copied into the repository; those
tests skip when it is absent.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from faults_kit import REPO, cli, error_line, write_kitti

from hydranet.limits import MIN_LIDAR_POINTS_DEFAULT, LimitError, check_lidar_points

REAL = REPO.parent / "shared" / "realdata" / "derived"
NUSC = REAL / "nuscenes_v1.0-mini_scene-0061_sample0"
KITTI = REAL / "kitti_object_000008"
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason="../shared/realdata is absent")


def _points(n: int) -> bytes:
    """``n`` KITTI Velodyne points (x, y, z, reflectance) ahead of the car, float32."""
    rng = np.random.default_rng(0)
    return np.column_stack([rng.uniform(5, 40, n), rng.uniform(-5, 5, n), rng.uniform(-1.5, 0.5, n),
                            rng.uniform(0, 1, n)]).astype(np.float32).tobytes()


def test_a_kitti_sweep_under_the_minimum_is_refused_naming_the_file(tmp_path):
    root = write_kitti(tmp_path / "kitti", np.eye(3), _points(100))  # 400 floats: parses as 100 whole points
    line = error_line(cli("convert", "kitti", "--root", root, "--out", tmp_path / "out", code=2))
    assert "000001.bin: 100 lidar points" in line and f"{MIN_LIDAR_POINTS_DEFAULT:,}" in line, line
    assert "min_lidar_points" in line
    assert not (tmp_path / "out" / "manifest.json").exists()
    # a sparser sensor: the user says so, and the same file converts
    cli("convert", "kitti", "--root", root, "--min-lidar-points", "50", "--out", tmp_path / "ok", code=0)


def test_the_limit_is_documented_and_stated_in_the_refusal():
    with pytest.raises(LimitError, match=f"f.bin: 999 lidar points, fewer than the {MIN_LIDAR_POINTS_DEFAULT:,}"):
        check_lidar_points(MIN_LIDAR_POINTS_DEFAULT - 1, "f.bin")
    check_lidar_points(MIN_LIDAR_POINTS_DEFAULT, "f.bin")
    import hydranet.limits

    assert f"{MIN_LIDAR_POINTS_DEFAULT:,}" in hydranet.limits.__doc__


def _fixture_module():
    """tests/data/nuscenes_fixture.py (a tiny dataroot in the official format), loaded under a unique name."""
    spec = importlib.util.spec_from_file_location("faults_nuscenes_fixture", REPO / "tests/data/nuscenes_fixture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _cut(path: Path, keep_points: int, floats_per_point: int) -> None:
    """Truncate a lidar file in place exactly at a point boundary (what parses and cannot be seen)."""
    data = path.read_bytes()
    path.write_bytes(data[: keep_points * floats_per_point * 4])


def test_a_nuscenes_sweep_missing_the_points_its_boxes_count_is_refused(tmp_path):
    from hydranet.data import open_source

    root = _fixture_module().write_nuscenes(tmp_path / "nusc", keyframes=1)
    opts = {"kind": "nuscenes", "dataroot": str(root), "version": "v1.0-mini", "labels": ["depth"]}
    assert open_source(opts)[0].labels["depth"].gt(0).any()  # the honest file reads
    lidar = next((root / "samples" / "LIDAR_TOP").glob("*.pcd.bin"))
    _cut(lidar, 0, 5)  # every point gone: the car's box counted one
    with pytest.raises(ValueError, match=r"pcd.bin: truncated or not this keyframe's sweep: its 0 points put 0 in"):
        open_source(opts)[0]


@needs_real
@pytest.mark.parametrize("keep", [0.9, 0.5])
def test_real_nuscenes_sweep_cut_at_a_point_boundary_is_refused(tmp_path, keep):
    """The real scene-0061 keyframe (34,688 points; its 68 boxes count 999 of them): cut to 90 % or 50 % at a
    point boundary, the converter refuses it naming the file and the table it disagrees with."""
    root = tmp_path / "nusc"
    for src in NUSC.rglob("*"):  # links to the real files; only the lidar file is a private, cut copy
        dst = root / src.relative_to(NUSC)
        if src.is_dir():
            dst.mkdir(parents=True, exist_ok=True)
        elif src.suffix == ".bin":
            shutil.copyfile(src, dst)
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(src, dst)
    args = ["convert", "nuscenes", "--dataroot", root, "--version", "v1.0-mini", "--image-size", "72x128",
            "--labels", "[depth]"]
    cli(*args, "--out", tmp_path / "honest", code=0)
    lidar = next((root / "samples" / "LIDAR_TOP").glob("*.pcd.bin"))
    _cut(lidar, int(34688 * keep), 5)
    line = error_line(cli(*args, "--out", tmp_path / "cut", code=2))
    assert lidar.name in line and "num_lidar_pts count 999" in line, line
    assert not (tmp_path / "cut" / "manifest.json").exists()


@needs_real
def test_real_kitti_sweep_cut_below_the_minimum_is_refused(tmp_path):
    root = tmp_path / "kitti"
    shutil.copytree(KITTI, root, symlinks=False)
    velo = root / "training" / "velodyne_reduced" / "000008.bin"
    cli("convert", "kitti", "--root", root, "--image-size", "64x208", "--out", tmp_path / "honest", code=0)
    velo.chmod(0o644)
    _cut(velo, 600, 4)
    line = error_line(cli("convert", "kitti", "--root", root, "--image-size", "64x208", "--out", tmp_path / "cut",
                          code=2))
    assert "000008.bin: 600 lidar points" in line, line
