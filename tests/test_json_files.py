"""hydranet.json_files: every JSON hydranet writes is standard JSON (NaN/inf as null)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from hydranet.json_files import dumps, to_jsonable, write_json


def _strict_load(text: str):
    def refuse(name: str):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_non_finite_numbers_become_null_and_arrays_lists(tmp_path):
    data = {"nan": math.nan, "inf": -math.inf, 1: np.float32(0.5), "t": torch.tensor([1.0, math.nan]),
            "a": np.array([[1, 2]]), "p": Path("runs/demo"), "tuple": (np.int64(3), None)}
    path = write_json(tmp_path / "sub" / "m.json", data)
    back = _strict_load(path.read_text())
    assert back == {"nan": None, "inf": None, "1": 0.5, "t": [1.0, None], "a": [[1, 2]], "p": "runs/demo",
                    "tuple": [3, None]}
    assert "\n" not in dumps({"x": [1, 2]}, indent=None)  # JSON lines
    assert to_jsonable(float("nan")) is None


def test_a_value_json_cannot_hold_is_an_error():
    with pytest.raises(TypeError):
        dumps({"x": object()})
