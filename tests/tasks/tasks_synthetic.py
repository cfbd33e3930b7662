"""Tiny synthetic rigs, labels and features for the task tests (no world, no model needed)."""

from __future__ import annotations

import torch
from torch import Tensor

from hydranet.data.sample import BEV_CLASSES, Batch, Sample, collate
from hydranet.geometry import BevGrid
from hydranet.setup import Rig, Setup, default_rig
from hydranet.tasks.base import HeadContext, Task
from hydranet.tasks.centernet2d import encode_boxes2d
from hydranet.tasks.objects3d import encode_objects3d

H, W = 32, 64
N_CAM = 2
CAM_NAMES = ("main", "rear")
GRID = BevGrid((-8.0, 8.0), (-8.0, 8.0), 0.5)  # 32 x 32 cells
CHANNELS = 8
STRIDES = {"p2": 4, "p3": 8, "p4": 16}


# What the tasks are created for: two cameras of the default rig at H x W, the small grid, the world's classes.
SETUP = Setup(image_size=(H, W), grid=GRID,
              rigs={"test": Rig(cameras=tuple(c for c in default_rig((H, W)).cameras if c.name in CAM_NAMES))})


def context() -> HeadContext:
    return HeadContext(camera_channels=CHANNELS, camera_strides=dict(STRIDES), bev_channels=CHANNELS)


def camera_labels(g: torch.Generator, i: int) -> dict:
    """Dense and box labels for one sample; boxes are well separated so peaks never merge."""
    labels: dict = {}
    horizon = 12 + i
    drivable = torch.zeros(N_CAM, H, W, dtype=torch.uint8)
    drivable[:, horizon:, 8 + 2 * i:W - 8] = 1
    labels["drivable"] = drivable
    lanes = torch.zeros(N_CAM, H, W, dtype=torch.uint8)
    for k, col in enumerate((10 + i, 30, 50 - i)):
        lanes[:, horizon:, col:col + 2] = k + 1
    labels["lanes"] = lanes
    rows = torch.arange(H, dtype=torch.float32)[:, None].expand(H, W)
    depth = torch.where(rows >= horizon, 40.0 / (rows - horizon + 1.0), torch.zeros(()))
    labels["depth"] = depth.expand(N_CAM, H, W).clone() * (1 + 0.1 * i)
    # Two objects per camera at fixed, distinct places, with jitter.
    boxes, cams, classes, visible = [], [], [], []
    for cam in range(N_CAM):
        for k, (x, y, bw, bh) in enumerate(((6.0, 8.0, 12.0, 10.0), (38.0, 14.0, 20.0, 14.0))):
            jx, jy = torch.rand(2, generator=g).tolist()
            boxes.append([x + 3 * jx, y + 3 * jy, x + 3 * jx + bw, y + 3 * jy + bh])
            cams.append(cam)
            classes.append((k + cam + i) % 5)
            visible.append(1.0)
    labels["detection2d"] = {"boxes": torch.tensor(boxes), "classes": torch.tensor(classes),
                             "camera": torch.tensor(cams), "visible": torch.tensor(visible),
                             "track_id": torch.arange(len(boxes))}
    labels["traffic_light"] = {"boxes": torch.tensor([[20.0, 2.0, 24.0, 10.0], [44.0, 4.0, 48.0, 12.0]]),
                               "camera": torch.tensor([0, 1]), "state": torch.tensor([i % 3, (i + 1) % 3]),
                               "lane": torch.tensor([0, 1 - i % 3]), "track_id": torch.tensor([0, 1])}
    return labels


def bev_labels(g: torch.Generator, i: int) -> dict:
    bev = torch.zeros(len(BEV_CLASSES), *GRID.shape, dtype=torch.uint8)
    bev[0, :, 10:22] = 1
    bev[1, :, 15:17] = 1
    bev[2, :, 2:6] = 1
    boxes = torch.tensor([[4.0 + i, 2.0, 0.8, 4.5, 1.9, 1.6, 0.3], [-3.0, -4.0 + i, 0.9, 0.6, 0.6, 1.7, -2.0],
                          [1.0, 5.0, 1.5, 8.0, 2.5, 3.0, 1.2]])
    boxes[:, :2] += torch.rand(3, 2, generator=g) * 0.4
    classes = torch.tensor([0, 2, 1])
    for (x, y, *_), c in zip(boxes.tolist(), classes.tolist(), strict=True):
        r, col, inside = GRID.cell_indices(torch.tensor([x]), torch.tensor([y]))
        if bool(inside):
            rr, cc = int(r), int(col)
            bev[3 if c < 2 else 4, max(rr - 2, 0):rr + 3, max(cc - 1, 0):cc + 2] = 1
    return {"bev_semantic": bev,
            "objects3d": {"boxes": boxes, "velocity": torch.tensor([[3.0, 0.5], [0.0, 1.0], [-2.0, 0.0]]),
                          "classes": classes, "track_id": torch.arange(3)}}


def make_sample(i: int, labels: tuple[str, ...] | None = None) -> Sample:
    g = torch.Generator().manual_seed(1000 + i)
    all_labels = camera_labels(g, i) | bev_labels(g, i)
    keep = all_labels if labels is None else {k: v for k, v in all_labels.items() if k in labels}
    return Sample(images=torch.randint(0, 255, (N_CAM, 3, H, W), dtype=torch.uint8, generator=g),
                  intrinsics=SETUP.rigs[0].intrinsics(), T_ego_from_cam=SETUP.rigs[0].extrinsics(),
                  T_world_from_ego=torch.eye(4), timestamp=0.1 * i, scene_id=f"synthetic-{i}",
                  camera_names=CAM_NAMES, frame_index=i, labels=keep)


def make_batch(n: int = 2, absent: dict[int, tuple[str, ...]] | None = None) -> Batch:
    """``absent[i]`` lists labels sample ``i`` lacks."""
    samples = []
    for i in range(n):
        s = make_sample(i)
        for name in (absent or {}).get(i, ()):
            s.labels.pop(name)
        samples.append(s)
    return collate(samples)


def subset(batch: Batch, keep: list[int]) -> Batch:
    """The batch restricted to samples ``keep`` (labels and presence included)."""
    idx = torch.tensor(keep)
    labels = {k: ([v[i] for i in keep] if isinstance(v, list) else v[idx]) for k, v in batch.labels.items()}
    return Batch(images=batch.images[idx], intrinsics=batch.intrinsics[idx], T_ego_from_cam=batch.T_ego_from_cam[idx],
                 T_world_from_ego=batch.T_world_from_ego[idx], timestamp=batch.timestamp[idx],
                 scene_id=[batch.scene_id[i] for i in keep], frame_index=batch.frame_index[idx],
                 camera_names=batch.camera_names, labels=labels, present={k: v[idx] for k, v in batch.present.items()})


def features(batch_size: int, seed: int = 0) -> tuple[dict[str, Tensor], Tensor]:
    """Random FPN levels ``[B*N, C, H/s, W/s]`` and a BEV map ``[B, C, R, C']``."""
    g = torch.Generator().manual_seed(seed)
    fpn = {name: torch.randn(batch_size * N_CAM, CHANNELS, H // s, W // s, generator=g) for name, s in STRIDES.items()}
    return fpn, torch.randn(batch_size, CHANNELS, *GRID.shape, generator=g)


def run_head(task: Task, head: torch.nn.Module, batch_size: int, seed: int = 0) -> dict[str, Tensor]:
    """Run ``head`` on random features and unfold cameras the way the model does."""
    fpn, bev = features(batch_size, seed)
    if task.space == "bev":
        return head(bev)
    out = head(fpn)
    return {k: v.reshape(batch_size, N_CAM, *v.shape[1:]) for k, v in out.items()}


def select(outputs: dict[str, Tensor], keep: list[int]) -> dict[str, Tensor]:
    idx = torch.tensor(keep)
    return {k: v[idx] for k, v in outputs.items()}


# Perfect outputs: head outputs that encode a batch's labels exactly (for round-trip tests).


def logit_of(p: torch.Tensor) -> torch.Tensor:
    return torch.logit(p.clamp(1e-4, 1 - 1e-4))


def perfect_centernet(batch, label: str, channel_key: str | None, num_channels: int, stride: int) -> dict:
    """CenterNet outputs encoding the labels; ``channel_key`` None puts every object on one heatmap."""
    none = torch.zeros(0, dtype=torch.long)
    objects = [(torch.zeros(0, 4), none, none, none.bool()) if t is None else
               (t["boxes"], t["camera"],
                t[channel_key] if channel_key else torch.zeros(len(t["boxes"]), dtype=torch.long),
                torch.ones(len(t["boxes"]), dtype=torch.bool))
               for t in batch.labels[label]]
    h, w = H // stride, W // stride
    enc = encode_boxes2d(objects, N_CAM, num_channels, (h, w), stride, (H, W))
    b = len(batch)
    offset, log_size = torch.zeros(b, N_CAM, 2, h, w), torch.zeros(b, N_CAM, 2, h, w)
    offset[enc.sample, enc.camera, :, enc.ys, enc.xs] = enc.offset
    log_size[enc.sample, enc.camera, :, enc.ys, enc.xs] = enc.log_size
    return {"heatmap": logit_of(enc.heatmap), "offset": offset, "log_size": log_size, "_enc": enc}


def perfect_outputs(name: str, batch) -> dict:
    """Head outputs that encode the batch's labels exactly (at label resolution for dense tasks)."""
    if name in ("detection2d", "traffic_light"):
        out = perfect_centernet(batch, name, "classes" if name == "detection2d" else None,
                                5 if name == "detection2d" else 1, 4)
        enc = out.pop("_enc")
        if name == "traffic_light":
            pairs = list(zip(enc.sample.tolist(), enc.object_index.tolist(), strict=True))
            one_hot = torch.nn.functional.one_hot
            lane, state = torch.zeros(len(batch), N_CAM, 5, H // 4, W // 4), torch.zeros(len(batch), N_CAM, 3, H // 4,
                                                                                         W // 4)
            lanes = torch.stack([batch.labels[name][s]["lane"][m] for s, m in pairs])
            states = torch.stack([batch.labels[name][s]["state"][m] for s, m in pairs])
            lane[enc.sample, enc.camera, :, enc.ys, enc.xs] = 10.0 * one_hot(lanes + 2, 5).float()
            state[enc.sample, enc.camera, :, enc.ys, enc.xs] = 10.0 * one_hot(states.long(), 3).float()
            out["lane"], out["state"] = lane, state
        return out
    label = batch.labels[name]
    if name in ("drivable", "bev_semantic"):
        x = (label.float() * 2 - 1) * 10
        return {"logits": x[:, :, None] if name == "drivable" else x}
    if name == "lanes":
        return {"logits": torch.nn.functional.one_hot(label.long(), 4).permute(0, 1, 4, 2, 3).float() * 10}
    if name == "depth":
        return {"log_depth": torch.where(label > 0, label.clamp(min=1e-3).log(), torch.zeros_like(label))[:, :, None]}
    empty = {"boxes": torch.zeros(0, 7), "classes": torch.zeros(0, dtype=torch.long)}
    enc = encode_objects3d([empty if t is None else t for t in label], GRID, GRID.shape, 5, 0.1, 2)
    out, start = {"heatmap": logit_of(enc["heatmap"])}, 0
    for key, n in (("offset", 2), ("z", 1), ("log_size", 3), ("rot", 2), ("velocity", 2)):
        x = torch.zeros(len(batch), n, *GRID.shape)
        x[enc["sample"], :, enc["ys"], enc["xs"]] = enc["reg"][:, start:start + n]
        out[key] = x
        start += n
    return out
