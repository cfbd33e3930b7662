"""docs/own-rig.md's worked example runs as written: its Python blocks, then its shell commands."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import torch
from typer.testing import CliRunner

from hydranet.cli import app
from hydranet.datasets import open_dataset

DOC = Path(__file__).resolve().parents[2] / "docs" / "own-rig.md"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(), flags=re.S)


def test_worked_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    python = _blocks("python")
    assert len(python) == 3
    scope: dict = {}
    for code in python[:2]:  # make the files, write frames.jsonl
        exec(compile(code, str(DOC), "exec"), scope)
    lines = (tmp_path / "my_fleet" / "frames.jsonl").read_text().splitlines()
    assert len(lines) == 3
    runner = CliRunner()
    for command in _blocks("bash")[0].strip().splitlines():
        args = shlex.split(command)
        assert args[0] == "hydranet"
        result = runner.invoke(app, args[1:])
        assert result.exit_code == 0, (command, result.output)
    assert (tmp_path / "my_fleet_1.png").stat().st_size > 10_000
    exec(compile(python[2], str(DOC), "exec"), scope)  # open_dataset on the shards
    shards, world = open_dataset("my_fleet_shards"), scope["world"]
    s, w = shards[1], world[1]
    assert s.camera_names == ("front", "rear") and sorted(s.labels) == ["drivable", "objects3d"]
    k = w.camera_names.index("rear")
    torch.testing.assert_close(s.T_ego_from_cam[1], w.T_ego_from_cam[k])
    torch.testing.assert_close(s.intrinsics[1], w.intrinsics[k])
    torch.testing.assert_close(s.labels["objects3d"]["boxes"], w.labels["objects3d"]["boxes"])
    assert torch.equal(s.labels["drivable"][1], w.labels["drivable"][k])
    # JPEG inside the shards: close to the camera image, not bit-exact.
    front = w.images[w.camera_names.index("main")].float()
    assert (s.images[0].float() - front).abs().mean() < 6
