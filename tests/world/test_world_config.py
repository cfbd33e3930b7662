"""WorldConfig: the default setup gives the contract's rig/grid; bad fields fail with errors that name the field."""

import pytest
from pydantic import ValidationError

from hydranet.setup import default_rig
from hydranet.world import SyntheticWorld, WorldConfig


def test_defaults_match_the_contract_rig_and_grid():
    cfg = WorldConfig()
    assert cfg.rendered_rig == default_rig((128, 256))
    assert cfg.setup.grid.shape == (128, 128)
    assert cfg.path_steps == 30
    assert len(SyntheticWorld(cfg)) == cfg.num_scenes * cfg.frames_per_scene


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"fog": 2.0}, "fog"),
        ({"lighting": "noon"}, "lighting"),
        ({"layout": "roundabout"}, "layout"),
        ({"lanes_per_direction": (0, 5)}, "lanes_per_direction"),
        ({"rate_hz": 0}, "rate_hz"),
        ({"drop_labels": {"depht": 0.5}}, "depht"),
        ({"drop_labels": {"depth": 1.5}}, "'depth': must be a fraction"),
        ({"colour_of_sky": "blue"}, "colour_of_sky"),
        ({"setup": {"grid": {"x_range": (10.0, -10.0)}}}, "x_range"),
        ({"signal_weights": {"go": 1.0}}, "signal_weights"),
        ({"layout_weights": {"straight": -1.0, "curve": 1.0, "intersection": 1.0}}, "layout_weights"),
        ({"setup": {"rigs": {"r": [{"name": "a", "hfov_deg": 60, "position": (0, 0, 1), "yaw_deg": 0,
                                    "pitch_deg": 0}] * 2}}}, "unique"),
        ({"rig": "fleet"}, "no rig 'fleet'"),
        ({"height": 96}, "height"),  # the setup's image_size is the one size
    ],
)
def test_bad_field_gives_a_clear_error(fields, needle):
    with pytest.raises(ValidationError) as e:
        WorldConfig(**fields)
    assert needle in str(e.value)


def test_config_round_trips_through_json():
    cfg = WorldConfig(seed=3, lighting="night", fog=0.01, drop_labels={"depth": 0.25})
    again = WorldConfig.model_validate_json(cfg.model_dump_json())
    assert again == cfg and again.rendered_rig == cfg.rendered_rig


def test_overrides_and_index_errors():
    world = SyntheticWorld(WorldConfig(num_scenes=1, frames_per_scene=3), seed=9)
    assert world.config.seed == 9 and len(world) == 3
    with pytest.raises(IndexError, match="out of range"):
        world[3]
