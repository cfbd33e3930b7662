"""hydranet.datasets: a command's --data errors name the option and the spec, the same way in every command."""

import pytest
from typer.testing import CliRunner

from hydranet.cli import app
from hydranet.data import ShardError
from hydranet.datasets import dataset_setup, open_data_option, open_dataset


def test_a_data_option_error_names_the_option_and_the_spec_and_keeps_its_type(tmp_path):
    missing = tmp_path / "nothing"
    with pytest.raises(ShardError) as plain:
        open_dataset(str(missing))
    with pytest.raises(type(plain.value), match=rf"^--data {missing}: no such dataset"):
        open_data_option(str(missing))
    with pytest.raises(ShardError, match=rf"^--pool {missing}: no such dataset"):
        open_data_option(str(missing), option="--pool")
    empty = tmp_path / "empty"  # a folder that is not a dataset: named as typed, then the file the reader missed
    empty.mkdir()
    with pytest.raises(ShardError, match=rf"^--data {empty}: {empty / 'manifest.json'}"):
        open_data_option(str(empty))


@pytest.mark.parametrize("args", [
    ["predict", "zoo:tiny-world", "--data", "{spec}", "-o", "{tmp}/p"],
    ["eval", "zoo:tiny-world", "--data", "{spec}"],
    ["view", "--data", "{spec}", "-o", "{tmp}/v.png"],
    ["show", "--data", "{spec}"],
    ["cache-features", "--ckpt", "zoo:tiny-world", "--data", "{spec}", "-o", "{tmp}/c"],
], ids=lambda a: a[0])
def test_every_command_names_its_data_option_alike(tmp_path, args):
    """Before: predict said ``--data: X: ...``, mine ``--data X: ...``, and eval, view, show and cache-features named
    no option at all."""
    spec = tmp_path / "nothing"
    res = CliRunner().invoke(app, [a.format(spec=spec, tmp=tmp_path) for a in args])
    assert res.exit_code == 2, res.output
    assert f"error: --data {spec}: no such dataset" in " ".join(res.output.split()), res.output


def test_dataset_setup_of_concatenated_parts_is_their_one_setup():
    from torch.utils.data import ConcatDataset, Subset

    from hydranet.setup import Setup

    one = open_dataset("synthetic", world={"seed": 1, "num_scenes": 1, "frames_per_scene": 2})
    two = open_dataset("synthetic", world={"seed": 2, "num_scenes": 1, "frames_per_scene": 2})
    assert dataset_setup(ConcatDataset([one, Subset(two, [0])])) == one.setup
    other = Setup.model_validate({"image_size": [64, 128]})
    three = open_dataset("synthetic", world={"seed": 3, "num_scenes": 1, "frames_per_scene": 2,
                                             "setup": other.model_dump(mode="json")})
    with pytest.raises(TypeError, match="part 0 and part 2"):
        dataset_setup(ConcatDataset([one, two, three]))
