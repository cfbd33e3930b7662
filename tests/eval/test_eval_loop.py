"""The one evaluation loop (hydranet.eval.loop): forward -> decode -> update -> compute, hooks, DDP shares."""

import pytest
import torch

from hydranet.data.sample import collate
from hydranet.eval.loop import Evaluator, dataset_batches, evaluate
from hydranet.model import ModelConfig, create_model
from hydranet.world import SyntheticWorld, WorldConfig

GRID = {"x_range": (-16.0, 16.0), "y_range": (-16.0, 16.0), "cell": 2.0}


@pytest.fixture(scope="module")
def world():
    return SyntheticWorld(WorldConfig(seed=3, num_scenes=2, frames_per_scene=3,
                                      setup={"image_size": (32, 64), "grid": GRID}))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = ModelConfig.preset("tiny", setup={"image_size": (32, 64), "grid": GRID}, tasks={"drivable": {}, "depth": {}})
    return create_model(cfg)


def by_hand(model, world, batch_size):
    """The loop written out: what every caller used to do on its own."""
    metrics = {n: t.make_metric() for n, t in model.task_objects.items()}
    with torch.no_grad():
        for s in range(0, len(world), batch_size):
            batch = collate([world[i] for i in range(s, min(len(world), s + batch_size))])
            out = model.eval()(batch.images, batch.intrinsics, batch.T_ego_from_cam)
            for n, t in model.task_objects.items():
                metrics[n].update(t.decode(out[n], batch), t.targets(batch))
    return {n: m.compute() for n, m in metrics.items()}


def test_evaluate_equals_the_loop_by_hand_and_restores_train_mode(model, world):
    model.train()
    seen = []
    got = evaluate(model, dataset_batches(world, batch_size=4), on_frame=lambda f: seen.append(f))
    assert model.training  # put back as it was
    want = by_hand(model, world, 4)
    assert got.keys() == want.keys() == {"drivable", "depth"}
    for task in want:
        assert list(got[task]) == list(want[task])  # headline first, same keys
        torch.testing.assert_close(torch.tensor(list(got[task].values())), torch.tensor(list(want[task].values())),
                                   equal_nan=True)
    assert [f.index for f in seen] == list(range(len(world)))
    assert [f.position for f in seen] == [0, 1, 2, 3, 0, 1]
    frame = seen[5]
    assert frame.outputs["drivable"]["logits"].shape[0] == 8  # cameras of one frame, batch dim removed
    assert frame.targets["depth"] is None or frame.targets["depth"].shape[0] == 8
    assert set(frame.decoded) == {"drivable", "depth"}


def test_a_forward_function_and_a_task_subset(model, world):
    calls = []

    def forward(batch, tasks):
        calls.append(list(tasks))
        return model(batch.images, batch.intrinsics, batch.T_ego_from_cam, tasks=tasks)

    got = evaluate(forward, dataset_batches(world, batch_size=3), {"depth": model.task_objects["depth"]})
    assert list(got) == ["depth"] and calls == [["depth"], ["depth"]]
    again = evaluate(model, dataset_batches(world, 2), {"depth": model.task_objects["depth"]})
    assert got["depth"] == pytest.approx(again["depth"], nan_ok=True)  # streaming: batch size does not matter


def test_bad_inputs_are_named(model):
    with pytest.raises(TypeError, match="cannot evaluate a Linear"):
        Evaluator(torch.nn.Linear(2, 2), tasks={})
    with pytest.raises(TypeError, match="pass tasks= explicitly"):
        Evaluator(lambda batch, tasks: {})
    with pytest.raises(ValueError, match=r"no metric for task\(s\) \['depth'\]"):
        Evaluator(model, metrics={"drivable": model.task_objects["drivable"].make_metric()})


def test_ddp_shares_are_disjoint_and_cover_the_capped_frames(world):
    def frames(rank):
        return [(b.scene_id[0], float(b.timestamp[0])) for b in dataset_batches(world, 1, 2, rank, world_size=2)]

    shares = [frames(0), frames(1)]
    everything = {(world[i].scene_id, world[i].timestamp) for i in range(4)}
    assert len(shares[0]) == len(shares[1]) == 2 and set(shares[0]) | set(shares[1]) == everything
