"""Detection2DMetric against pycocotools (the reference) and hand cases."""

import contextlib
import io

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from hydranet.metrics import Detection2DMetric

CLASSES = ("car", "truck", "pedestrian")
CAMS = 3


def random_frames(rng: np.random.Generator, n_frames: int):
    """Ground truth plus noisy detections: jittered copies, duplicates and pure false positives."""
    preds, targets = [], []
    for _ in range(n_frames):
        m = int(rng.integers(0, 9))
        xy = rng.uniform(0, 200, (m, 2))
        wh = rng.uniform(8, 60, (m, 2))
        g = np.concatenate([xy, xy + wh], 1)
        g_cls, g_cam = rng.integers(0, len(CLASSES), m), rng.integers(0, CAMS, m)
        keep = rng.random(m) < 0.8
        jit = g[keep] + rng.normal(0, 2, (int(keep.sum()), 4))
        k = int(rng.integers(0, 5))
        fxy = rng.uniform(0, 200, (k, 2))
        fp = np.concatenate([fxy, fxy + rng.uniform(8, 60, (k, 2))], 1)
        d = np.concatenate([jit, jit[: len(jit) // 2] + rng.normal(0, 6, (len(jit) // 2, 4)), fp])
        d[:, 2:] = np.maximum(d[:, 2:], d[:, :2] + 1)
        d_cls = np.concatenate([g_cls[keep], g_cls[keep][: len(jit) // 2], rng.integers(0, len(CLASSES), k)])
        d_cam = np.concatenate([g_cam[keep], g_cam[keep][: len(jit) // 2], rng.integers(0, CAMS, k)])
        d_cls = np.where(rng.random(len(d_cls)) < 0.1, rng.integers(0, len(CLASSES), len(d_cls)), d_cls)
        preds.append({"boxes": torch.tensor(d, dtype=torch.float32), "scores": torch.tensor(np.concatenate(
            [0.4 + 0.6 * rng.random(len(jit)), 0.6 * rng.random(len(d) - len(jit))])),
                      "classes": torch.tensor(d_cls), "camera": torch.tensor(d_cam)})
        targets.append({"boxes": torch.tensor(g, dtype=torch.float32), "classes": torch.tensor(g_cls),
                        "camera": torch.tensor(g_cam), "visible": torch.ones(m)})
    return preds, targets


def coco_eval(preds, targets, camera=None):
    """pycocotools on the same data: one COCO image per (frame, camera)."""
    images, anns, dets = [], [], []
    for f, (p, t) in enumerate(zip(preds, targets, strict=True)):
        for c in range(CAMS):
            if camera is not None and c != camera:
                continue
            img = f * CAMS + c + 1
            images.append({"id": img})
            for b, k, cam in zip(t["boxes"].double().numpy(), t["classes"].numpy(), t["camera"].numpy(), strict=True):
                if cam == c:
                    w, h = b[2] - b[0], b[3] - b[1]
                    anns.append({"id": len(anns) + 1, "image_id": img, "category_id": int(k) + 1,
                                 "bbox": [b[0], b[1], w, h], "area": w * h, "iscrowd": 0})
            for b, s, k, cam in zip(p["boxes"].double().numpy(), p["scores"].numpy(), p["classes"].numpy(),
                                    p["camera"].numpy(), strict=True):
                if cam == c:
                    dets.append({"image_id": img, "category_id": int(k) + 1, "score": float(s),
                                 "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]})
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": anns,
                      "categories": [{"id": i + 1, "name": n} for i, n in enumerate(CLASSES)]}
        gt.createIndex()
        dt = gt.loadRes(dets) if dets else COCO()
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    prec = ev.eval["precision"][:, :, :, 0, 2]  # [T, R, K] area all, maxDets 100
    per_class = [prec[:, :, k][prec[:, :, k] > -1].mean() if (prec[:, :, k] > -1).any() else np.nan
                 for k in range(len(CLASSES))]
    return ev.stats, per_class


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_pycocotools(seed):
    preds, targets = random_frames(np.random.default_rng(seed), 25)
    metric = Detection2DMetric(CLASSES, CAMS)
    metric.update(preds, targets)
    out = metric.compute()
    stats, per_class = coco_eval(preds, targets)
    assert 0.2 < out["map"] < 0.95  # a non-trivial case
    assert out["map"] == pytest.approx(stats[0], abs=1e-6)
    assert out["ap50"] == pytest.approx(stats[1], abs=1e-6)
    assert out["ap75"] == pytest.approx(stats[2], abs=1e-6)
    for k, name in enumerate(CLASSES):
        assert out[f"ap/{name}"] == pytest.approx(per_class[k], abs=1e-6, nan_ok=True)
    for c in range(CAMS):
        assert out[f"ap/cam{c}"] == pytest.approx(coco_eval(preds, targets, camera=c)[0][0], abs=1e-6)


def test_max_dets_truncation_matches_pycocotools():
    rng = np.random.default_rng(7)
    preds, targets = random_frames(rng, 4)
    # flood one image with 150 low-quality detections: COCO keeps the 100 best per image and class
    extra = torch.tensor(rng.uniform(0, 200, (150, 2)))
    boxes = torch.cat([extra, extra + 20], 1).float()
    preds[0] = {"boxes": torch.cat([preds[0]["boxes"], boxes]),
                "scores": torch.cat([preds[0]["scores"], torch.tensor(rng.random(150) * 0.5)]),
                "classes": torch.cat([preds[0]["classes"], torch.zeros(150, dtype=torch.long)]),
                "camera": torch.cat([preds[0]["camera"], torch.zeros(150, dtype=torch.long)])}
    metric = Detection2DMetric(CLASSES, CAMS)
    metric.update(preds, targets)
    assert metric.compute()["map"] == pytest.approx(coco_eval(preds, targets)[0][0], abs=1e-6)


def test_perfect_and_empty():
    t = {"boxes": torch.tensor([[0, 0, 10, 10], [20, 20, 40, 50.0]]), "classes": torch.tensor([0, 1]),
         "camera": torch.tensor([0, 1])}
    perfect = {"boxes": t["boxes"], "scores": torch.tensor([0.9, 0.8]), "classes": t["classes"],
               "camera": t["camera"]}
    m = Detection2DMetric(CLASSES, 2)
    m.update([perfect], [t])
    out = m.compute()
    assert out["map"] == pytest.approx(1.0) and out["ap/car"] == pytest.approx(1.0)
    assert np.isnan(out["ap/pedestrian"])  # no ground truth: left out, not 0
    m.reset()
    empty = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "classes": torch.zeros(0, dtype=torch.long),
             "camera": torch.zeros(0, dtype=torch.long)}
    m.update([empty, perfect], [t, None])  # None target: skipped
    assert m.num_frames == 1 and m.compute()["map"] == 0.0


def test_ignored_ground_truth_is_neither_tp_nor_fp():
    t = {"boxes": torch.tensor([[0, 0, 10, 10], [50, 50, 60, 60.0]]), "classes": torch.tensor([0, 0]),
         "camera": torch.tensor([0, 0]), "visible": torch.tensor([1.0, 0.05])}
    p = {"boxes": t["boxes"], "scores": torch.tensor([0.5, 0.9]), "classes": t["classes"], "camera": t["camera"]}
    m = Detection2DMetric(CLASSES, 1, min_visible=0.1)
    m.update([p], [t])
    assert m.compute()["map"] == pytest.approx(1.0)  # the high-scoring hit on the ignored box costs nothing
    m2 = Detection2DMetric(CLASSES, 1)
    m2.update([{**p, "boxes": torch.tensor([[0, 0, 10, 10], [80, 80, 90, 90.0]])}], [t])
    assert m2.compute()["map"] < 1.0


def test_bad_input_names_sample():
    m = Detection2DMetric(CLASSES, 2)
    t = {"boxes": torch.zeros(1, 4), "classes": torch.tensor([0]), "camera": torch.tensor([5])}
    p = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "classes": torch.zeros(0), "camera": torch.zeros(0)}
    with pytest.raises(ValueError, match="sample 0.*camera index out of range"):
        m.update([p], [t])
    with pytest.raises(ValueError, match="missing key"):
        m.update([{"boxes": torch.zeros(0, 4)}], [t])


def test_cameras_discovered_when_not_given():
    preds, targets = random_frames(np.random.default_rng(5), 10)
    given, found = Detection2DMetric(CLASSES, CAMS), Detection2DMetric(CLASSES)
    given.update(preds, targets)
    found.update(preds, targets)
    assert found.compute() == pytest.approx(given.compute(), nan_ok=True)
    named = Detection2DMetric(CLASSES, camera_names=("main", "left", "right"))
    named.update(preds, targets)
    assert named.compute()["ap/left"] == pytest.approx(given.compute()["ap/cam1"])


def test_bootstrap_resample_equals_duplicated_frames():
    preds, targets = random_frames(np.random.default_rng(6), 6)
    m = Detection2DMetric(CLASSES, CAMS)
    m.update(preds, targets)
    idx = [0, 0, 3, 5, 5, 5]
    dup = Detection2DMetric(CLASSES, CAMS)
    dup.update([preds[i] for i in idx], [targets[i] for i in idx])
    assert m.compute_frames(idx) == pytest.approx(dup.compute(), nan_ok=True)
