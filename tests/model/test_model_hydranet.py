"""HydraNet: API, shapes, sub-graph selection, per-sample geometry, gradients, config errors."""

import pytest
import torch
from hydranet_model_testkit import BEV, CAM, rig_inputs, tiny_config
from pydantic import ValidationError

from hydranet.data.sample import Sample, collate
from hydranet.geometry import resize_intrinsics
from hydranet.model import MODEL_PRESETS, HydraNet, ModelConfig, create_model
from hydranet.setup import default_rig


@pytest.fixture(scope="module")
def model() -> HydraNet:
    torch.manual_seed(0)
    return create_model(tiny_config()).eval()


def count_calls(module: torch.nn.Module) -> list[int]:
    calls = [0]
    module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_output_shapes_and_attributes(model):
    images, K, T = rig_inputs(2)
    out = model(images, K, T)
    assert list(out) == [CAM, BEV]
    assert out[CAM]["logits"].shape == (2, 8, 1, 16, 32)  # camera outputs unfolded to [B, N, ...]
    assert out[BEV]["logits"].shape == (2, 2, 32, 32)  # BEV outputs on the grid
    assert set(model.heads) == {CAM, BEV} and set(model.task_objects) == {CAM, BEV}
    assert model.fusion is not None and model.fusion.levels == ["p3"] and model.trunk is not None
    assert model.pixel_mean == (123.675, 116.28, 103.53) and len(model.pixel_std) == 3
    assert model.head_context.camera_strides == {"p2": 4, "p3": 8, "p4": 16, "p5": 32}


def test_camera_only_request_never_runs_fusion_and_bev_only_skips_camera_heads():
    torch.manual_seed(0)
    m = create_model(tiny_config()).eval()
    fusion_calls, cam_head_calls, trunk_calls = count_calls(m.fusion), count_calls(m.heads[CAM]), count_calls(m.trunk)
    bev_head_calls = count_calls(m.heads[BEV])
    images, K, T = rig_inputs(1)
    out = m(images, K, T, tasks=[CAM])
    assert list(out) == [CAM]
    assert (fusion_calls[0], cam_head_calls[0], bev_head_calls[0], trunk_calls[0]) == (0, 1, 0, 1)
    out = m(images, K, T, tasks=[BEV])
    assert list(out) == [BEV]
    assert (fusion_calls[0], cam_head_calls[0], bev_head_calls[0], trunk_calls[0]) == (1, 1, 1, 2)
    m(images, K, T)
    assert (fusion_calls[0], cam_head_calls[0], bev_head_calls[0], trunk_calls[0]) == (2, 2, 2, 3)


def test_model_without_bev_tasks_has_no_fusion():
    m = create_model(tiny_config(tasks=(CAM,)))
    assert m.fusion is None and not any(n.startswith("fusion") for n, _ in m.named_parameters())
    images, K, T = rig_inputs(1)
    assert list(m(images, K, T)) == [CAM]


def test_forward_from_cached_features_equals_forward(model):
    images, K, T = rig_inputs(2)
    with torch.no_grad():
        direct = model(images, K, T)
        feats = model.camera_features(images)
        assert all(f.shape[0] == 16 for f in feats.values())
        cached = model.forward_features(feats, K, T)
    for task in direct:
        for key in direct[task]:
            assert torch.equal(direct[task][key], cached[task][key])


def test_per_sample_intrinsics_and_extrinsics(model):
    """A batch of 2 with a different K and T per sample: each sample's result is what it gets alone,
    BEV outputs follow the calibration while camera outputs do not depend on it."""
    images, K, T = rig_inputs(2)
    images[1] = images[0]
    K[1] = resize_intrinsics(K[1].double(), 1.3, 1.3).float()  # zoomed lenses on sample 1
    T[1, :, 1, 3] += 0.5  # whole rig shifted 0.5 m left on sample 1
    with torch.no_grad():
        both = model(images, K, T)
        alone = [model(images[i: i + 1], K[i: i + 1], T[i: i + 1]) for i in range(2)]
    for i in range(2):
        for task in both:
            assert torch.allclose(both[task]["logits"][i], alone[i][task]["logits"][0], atol=1e-5)
    assert torch.equal(both[CAM]["logits"][0], both[CAM]["logits"][1])
    assert (both[BEV]["logits"][0] - both[BEV]["logits"][1]).abs().max() > 1e-3


def test_gradients_reach_the_trunk_from_each_head_type():
    torch.manual_seed(0)
    m = create_model(tiny_config()).train()
    images, K, T = rig_inputs(2)
    stem = m.trunk.stem[0].weight
    for task in (CAM, BEV):
        m.zero_grad(set_to_none=True)
        out = m(images, K, T, tasks=[task])
        out[task]["logits"].square().mean().backward()
        assert stem.grad is not None and stem.grad.abs().sum() > 0, task
        assert all(p.grad is not None for p in m.heads[task].parameters())
        other = BEV if task == CAM else CAM
        assert all(p.grad is None for p in m.heads[other].parameters())
        fusion_grads = [p.grad for p in m.fusion.parameters()]
        assert all(g is None for g in fusion_grads) == (task == CAM)


def test_forward_and_task_loss_on_a_collated_batch(model):
    rig = default_rig((64, 128))
    samples = []
    for i in range(2):
        labels = {"drivable": torch.randint(0, 2, (8, 64, 128), dtype=torch.uint8)} if i == 0 else {}
        samples.append(Sample(torch.randint(0, 256, (8, 3, 64, 128), dtype=torch.uint8), rig.intrinsics(),
                              rig.extrinsics(), torch.eye(4), 0.0, "scene", rig.names, i, labels))
    batch = collate(samples)
    out = model(batch.images, batch.intrinsics, batch.T_ego_from_cam, tasks=[CAM])
    loss = model.task_objects[CAM].loss(out[CAM], batch)["loss"]
    assert loss.ndim == 0 and torch.isfinite(loss) and loss > 0


def test_bad_inputs_raise_clear_errors(model):
    images, K, T = rig_inputs(1)
    with pytest.raises(ValueError, match="uint8"):
        model(images.float(), K, T)
    with pytest.raises(ValueError, match=r"\[B, N, 3, H, W\]"):
        model(images[0], K, T)
    with pytest.raises(ValueError, match="T_ego_from_cam"):
        model(images, K, T[:, :4])
    with pytest.raises(KeyError, match="not configured"):
        model(images, K, T, tasks=["depth_of_field"])
    bad_K = K.clone()
    bad_K[0, 2, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="intrinsics holds a non-finite value"):
        model(images, bad_K, T)
    bad_T = T.clone()
    bad_T[0, 1, 0, 3] = float("inf")
    with pytest.raises(ValueError, match="T_ego_from_cam holds a non-finite value"):
        model(images, K, bad_T)
    # A frame of another size than the setup's: refused, not run at a resolution the model never saw.
    h, w = model.setup.image_size
    larger = torch.nn.functional.interpolate(images[0].float(), size=(2 * h, 2 * w)).to(torch.uint8)[None]
    with pytest.raises(ValueError, match=rf"images are \({2 * h}, {2 * w}\).*setup.image_size is \({h}, {w}\)"):
        model(larger, K, T)
    # K in another image's pixels (here three times the input's): the principal point leaves the input, refused
    # by camera, on every path that reads K; a failed camera's K is not read (any placeholder will do).
    native = K.clone()
    native[0, 3, :2] *= 3.0
    with pytest.raises(ValueError, match=rf"intrinsics\[0, 3\] puts the principal point .* where no K of the "
                                         rf"\(H, W\) = \({h}, {w}\) input"):
        model(images, native, T)
    with pytest.raises(ValueError, match=r"intrinsics\[0, 3\] puts the principal point"):
        model.forward_features(model.camera_features(images), native, T)
    dead = torch.ones(1, images.shape[1], dtype=torch.bool)
    dead[0, 3] = False
    model(images, native, T, camera_valid=dead)


def test_config_validation_names_the_field():
    with pytest.raises(ValidationError, match="bogus"):
        ModelConfig.model_validate({"bogus": 1})
    with pytest.raises(ValidationError, match="neck.min_level"):
        ModelConfig.model_validate({"neck": {"min_level": 3}, "fusion": {"levels": ["p2"]}})
    with pytest.raises(ValidationError, match="fusion.stride"):
        ModelConfig.model_validate({"setup": {"grid": {"x_range": (-3, 3), "y_range": (-3, 3), "cell": 1.0}},
                                    "fusion": {"stride": 4}})
    with pytest.raises(ValidationError, match="grid"):
        ModelConfig.model_validate({"setup": {"grid": {"x_range": (-3, 3), "y_range": (-3, 3), "cell": 0.7}}})
    with pytest.raises(KeyError, match="unknown model preset"):
        ModelConfig.preset("huge")
    with pytest.raises(ValueError, match="tasks is empty"):
        create_model(ModelConfig())
    with pytest.raises(ValidationError, match=r"tasks\n.*unknown task 'no_such_task'"):  # at config time now
        tiny_config(tasks=("no_such_task",))


def test_config_round_trips_and_rebuilds_identical_weights():
    cfg = tiny_config()
    again = ModelConfig.model_validate(cfg.model_dump(mode="json"))
    assert again == cfg
    torch.manual_seed(1)
    a = create_model(cfg)
    torch.manual_seed(1)
    b = create_model(again.model_dump())
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    counts = a.parameter_counts()
    assert counts["total"] == sum(v for k, v in counts.items() if k != "total") > 0


def test_onnx_export_matches_pytorch(tmp_path, model):
    onnxruntime = pytest.importorskip("onnxruntime")

    class Wrapped(torch.nn.Module):
        def __init__(self, m: HydraNet):
            super().__init__()
            self.m = m

        def forward(self, images, K, T):
            out = self.m(images, K, T)
            return out[CAM]["logits"], out[BEV]["logits"]

    images, K, T = rig_inputs(1)
    K[0, 0, 0, 0] *= 1.1  # geometry is a graph input, not a constant
    wrapped = Wrapped(model).eval()
    with torch.no_grad():
        ref = wrapped(images, K, T)
    path = tmp_path / "hydranet.onnx"
    torch.onnx.export(wrapped, (images, K, T), str(path), opset_version=17, dynamo=False,
                      input_names=["images", "intrinsics", "T_ego_from_cam"])
    sess = onnxruntime.InferenceSession(str(path))
    got = sess.run(None, {"images": images.numpy(), "intrinsics": K.numpy(), "T_ego_from_cam": T.numpy()})
    for r, g in zip(ref, got, strict=True):
        assert abs(r.numpy() - g).max() < 1e-4
    K2 = K.clone()
    K2[0, :, :2] *= 0.8
    with torch.no_grad():
        ref2 = wrapped(images, K2, T)[1]
    got2 = sess.run(None, {"images": images.numpy(), "intrinsics": K2.numpy(), "T_ego_from_cam": T.numpy()})[1]
    assert abs(ref2.numpy() - got2).max() < 1e-4


def test_preset_overrides_merge_sections_and_replace_tasks():
    cfg = ModelConfig.preset("tiny", fusion={"temporal": True}, tasks={CAM: {}})
    assert cfg.fusion.temporal and cfg.fusion.levels == MODEL_PRESETS["tiny"].fusion.levels
    assert cfg.fusion.channels == MODEL_PRESETS["tiny"].fusion.channels and list(cfg.tasks) == [CAM]


@pytest.mark.parametrize("preset", sorted(MODEL_PRESETS))
def test_every_preset_builds_and_runs(preset):
    cfg = ModelConfig.preset(preset, setup={"image_size": (64, 128), "grid": {"x_range": (-8.0, 8.0),
                                                                               "y_range": (-8.0, 8.0), "cell": 1.0}},
                             tasks={CAM: {}, BEV: {}})
    m = create_model(cfg).eval()
    images, K, T = rig_inputs(1)
    with torch.no_grad():
        out = m(images, K, T)
    assert out[BEV]["logits"].shape == (1, 2, 16, 16)
    assert all(torch.isfinite(v).all() for d in out.values() for v in d.values())
