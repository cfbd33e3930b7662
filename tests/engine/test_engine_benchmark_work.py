"""benchmarks/engine.py: a --work directory holds the results of one set of settings, never mixes in another's."""

import argparse
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("hydranet_engine_benchmark", ROOT / "benchmarks" / "engine.py")
engine_bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(engine_bench)


def _args(**changes) -> argparse.Namespace:
    base = {"seeds": "0,1,2", "work": "W", "pools": "natural,rare", "start": "zoo:tiny-world", "budget": 16,
            "max_per_scene": None, "ft_lr": 3e-4, "triggers": "light_margin,condition:name=night*2"}
    return argparse.Namespace(**(base | changes))


def test_the_first_command_writes_its_settings_and_the_same_settings_reuse_them(tmp_path):
    engine_bench.check_work_settings(tmp_path, _args())
    written = json.loads((tmp_path / "settings.json").read_text())
    assert written["max_per_scene"] is None and "seeds" not in written and "work" not in written
    (tmp_path / "natural_seed_0.json").write_text("{}")
    engine_bench.check_work_settings(tmp_path, _args(seeds="1", pools="rare"))  # other seeds and pools: same work


def test_other_settings_are_refused_naming_each_difference(tmp_path):
    engine_bench.check_work_settings(tmp_path, _args())
    with pytest.raises(SystemExit, match=r"max_per_scene: None there, 2 here.*another --work"):
        engine_bench.check_work_settings(tmp_path, _args(max_per_scene=2))


def test_a_work_directory_of_unknown_settings_is_refused(tmp_path):
    (tmp_path / "natural_seed_0.json").write_text("{}")
    with pytest.raises(SystemExit, match="no settings.json"):
        engine_bench.check_work_settings(tmp_path, _args())
    (tmp_path / "settings.json").write_text("{not json")
    with pytest.raises(SystemExit, match="unreadable"):
        engine_bench.check_work_settings(tmp_path, _args())
