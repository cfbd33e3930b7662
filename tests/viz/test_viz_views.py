"""``Views``' layout of a rig's cameras: as on the car, for any rig."""

import torch

from hydranet.geometry import camera_extrinsics
from hydranet.setup import default_rig
from hydranet.viz.views import LAYOUT, rig_layout


def test_any_rig_is_laid_out_as_on_the_car():
    """Forward-looking cameras on the top row, rear-facing ones below, each row from the car's left to its right,
    the shorter row centred: the world's rig gets the rows and order of its hand-made ``LAYOUT``, and a five-camera
    rig declared in another order (a new-user trial's) gets left, front, right over rear-left, rear-right."""
    rig = default_rig((64, 128))
    slots, cols, rows = rig_layout(rig.extrinsics())
    by_row = {r: [n for _, n in sorted((slots[i][1], n) for i, n in enumerate(rig.names) if slots[i][0] == r)]
              for r in range(rows)}
    expected = {r: [n for _, n in sorted((c, n) for n, (rr, c) in LAYOUT.items() if rr == r)] for r in (0, 1)}
    assert (cols, rows) == (5, 2) and by_row[1] == expected[1]
    # narrow, main and wide all look straight ahead: between the pillars, in rig order
    assert by_row[0][0] == "left_pillar" and by_row[0][-1] == "right_pillar" and set(by_row[0]) == set(expected[0])
    names = ["rearright", "front", "rearleft", "left", "right"]
    yaws = {"front": 0.0, "left": 60.0, "right": -60.0, "rearleft": 135.0, "rearright": -135.0}
    T = torch.stack([camera_extrinsics((0.0, 0.0, 1.5), yaws[n], 0.0, 0.0) for n in names])
    slots, cols, rows = rig_layout(T)
    assert (cols, rows) == (3, 2)
    assert {names[i]: rc for i, rc in slots.items()} == {"left": (0, 0), "front": (0, 1), "right": (0, 2),
                                                         "rearleft": (1, 0.5), "rearright": (1, 1.5)}
