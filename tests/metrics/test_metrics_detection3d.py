"""Detection3DMetric: nuscenes-devkit reference values and hand-computed cases."""

import numpy as np
import pytest
import torch

from hydranet.metrics import Detection3DMetric

CLASSES = ("car", "truck", "pedestrian", "cone")

# nuscenes-devkit 1.2.0 ``accumulate``/``calc_ap``/``calc_tp`` (min recall = min precision = 0.1) run on
# ``random_frames(np.random.default_rng(0), 30)`` below (classes mapped car, truck, pedestrian,
# traffic_cone; quaternions from yaw about z): per class AP at 0.5/1/2/4 m and ATE/ASE/AOE/AVE at 2 m.
# The devkit cannot be installed in CI (it pulls OpenCV, matplotlib, shapely, sklearn), so its outputs
# are frozen here; the AOE/AVE of cones are not scored (NaN), as the devkit's summary does.
DEVKIT = {
    "car": ([0.0, 0.067310087824, 0.446528671082, 0.767946919756],
            [1.180296702708, 0.272660612944, 0.230619704533, 1.423768289659]),
    "truck": ([0.005812613665, 0.185409494232, 0.743308350574, 0.87127072267],
              [0.955099155453, 0.250968010584, 0.256783306656, 1.129106736449]),
    "pedestrian": ([0.0, 0.081414853198, 0.662206299067, 0.955911809264],
                   [1.132352560036, 0.247433207396, 0.310237691663, 1.527565061681]),
    "cone": ([0.0, 0.107460890872, 0.453753577775, 0.620267141799],
             [1.115304742236, 0.252879773548, np.nan, np.nan]),
}


def random_boxes(rng, n):
    return np.concatenate([rng.uniform(-40, 40, (n, 2)), rng.uniform(0, 1, (n, 1)), rng.uniform(0.5, 5, (n, 3)),
                           rng.uniform(-np.pi, np.pi, (n, 1))], 1)


def random_frames(rng, n):
    preds, targets = [], []
    for _ in range(n):
        m = int(rng.integers(0, 8))
        g = random_boxes(rng, m)
        gv, gc = rng.normal(0, 3, (m, 2)), rng.integers(0, 4, m)
        keep = rng.random(m) < 0.85
        p = g[keep].copy()
        p[:, :2] += rng.normal(0, 1.0, (len(p), 2))
        p[:, 3:6] *= rng.uniform(0.8, 1.2, (len(p), 3))
        p[:, 6] += rng.normal(0, 0.3, len(p))
        pv, pc = gv[keep] + rng.normal(0, 1, (len(p), 2)), gc[keep].copy()
        k = int(rng.integers(0, 4))
        fp = random_boxes(rng, k)
        p = np.concatenate([p, fp])
        pv = np.concatenate([pv, rng.normal(0, 3, (k, 2))])
        pc = np.concatenate([pc, rng.integers(0, 4, k)])
        s = np.concatenate([0.3 + 0.7 * rng.random(int(keep.sum())), 0.6 * rng.random(k)])
        preds.append(dict(boxes=torch.tensor(p), scores=torch.tensor(s), classes=torch.tensor(pc),
                          velocity=torch.tensor(pv)))
        targets.append(dict(boxes=torch.tensor(g), classes=torch.tensor(gc), velocity=torch.tensor(gv)))
    return preds, targets


def test_matches_nuscenes_devkit_reference():
    preds, targets = random_frames(np.random.default_rng(0), 30)
    m = Detection3DMetric(CLASSES)
    m.update(preds, targets)
    out = m.compute()
    for name, (aps, tps) in DEVKIT.items():
        assert out[f"ap/{name}"] == pytest.approx(np.mean(aps), abs=1e-9)
        for err, ref in zip(("ate", "ase", "aoe", "ave"), tps, strict=True):
            assert out[f"{err}/{name}"] == pytest.approx(ref, abs=1e-9, nan_ok=True)
    assert out["map"] == pytest.approx(np.mean([a for a, _ in DEVKIT.values()]), abs=1e-9)
    for i, thr in enumerate((0.5, 1, 2, 4)):
        assert out[f"ap@{thr:g}m"] == pytest.approx(np.mean([a[i] for a, _ in DEVKIT.values()]), abs=1e-9)


def one_frame(shift=(0.0, 0.0), n=6, cls=0):
    rng = np.random.default_rng(3)
    g = random_boxes(rng, n)
    g[:, 0], g[:, 1] = np.arange(n) * 10.0, 0.0  # well separated: 10 m apart on the x axis
    t = dict(boxes=torch.tensor(g), classes=torch.full((n,), cls), velocity=torch.zeros(n, 2))
    p = g.copy()
    p[:, :2] += shift
    return dict(boxes=torch.tensor(p), scores=torch.linspace(1, 0.5, n), classes=torch.full((n,), cls),
                velocity=torch.zeros(n, 2)), t


def test_perfect_predictions_ap_one_errors_zero():
    p, t = one_frame()
    m = Detection3DMetric(CLASSES)
    m.update([p], [t])
    out = m.compute()
    assert out["map"] == pytest.approx(1.0)
    assert out["ate"] == pytest.approx(0.0) and out["ase"] == pytest.approx(0.0)
    assert out["aoe"] == pytest.approx(0.0) and out["ave"] == pytest.approx(0.0)
    assert np.isnan(out["ap/truck"])  # no truck ground truth: not scored


def test_shift_by_1_5m():
    p, t = one_frame(shift=(1.5, 0.0))
    m = Detection3DMetric(CLASSES)
    m.update([p], [t])
    out = m.compute()
    assert out["ap@0.5m"] == 0.0 and out["ap@1m"] == 0.0
    assert out["ap@2m"] == pytest.approx(1.0) and out["ap@4m"] == pytest.approx(1.0)
    assert out["map"] == pytest.approx(0.5)
    assert out["ate"] == pytest.approx(1.5)


def test_half_recall_and_tp_errors_by_hand():
    p, t = one_frame(n=4)
    p["boxes"] = p["boxes"][:2].clone()
    p["boxes"][:, 3:6] = t["boxes"][:2, 3:6] * torch.tensor([2.0, 1.0, 1.0])  # double length: IoU 1/2
    p["boxes"][:, 6] = t["boxes"][:2, 6] + 0.5
    p["velocity"] = torch.tensor([[3.0, 4.0], [3.0, 4.0]])
    p["scores"], p["classes"] = p["scores"][:2], p["classes"][:2]
    m = Detection3DMetric(CLASSES)
    m.update([p], [t])
    out = m.compute()
    # recall reaches 0.5 with precision 1: points 0.11..0.50 (40 of 90 kept) at (1-0.1)/0.9 = 1
    assert out["ap/car"] == pytest.approx(40 / 90)
    assert out["ase"] == pytest.approx(0.5) and out["aoe"] == pytest.approx(0.5) and out["ave"] == pytest.approx(5)


def test_duplicates_are_false_positives_and_max_range():
    p, t = one_frame(n=2)
    dup = {k: torch.cat([v, v]) for k, v in p.items()}
    dup["scores"] = torch.tensor([0.9, 0.8, 0.95, 0.85])
    m = Detection3DMetric(CLASSES)
    m.update([dup], [t])
    assert m.compute()["map"] < 1.0
    far = Detection3DMetric(CLASSES, max_range=5.0)  # only the box at x = 0 is kept
    p2, t2 = one_frame(n=2)
    p2["boxes"] = p2["boxes"][:1]
    p2["scores"], p2["classes"], p2["velocity"] = p2["scores"][:1], p2["classes"][:1], p2["velocity"][:1]
    far.update([p2], [t2])
    assert far.compute()["map"] == pytest.approx(1.0)


def test_bad_class_index_names_sample():
    p, t = one_frame()
    t["classes"][0] = 9
    with pytest.raises(ValueError, match="sample 0 target: class index out of range"):
        Detection3DMetric(CLASSES).update([p], [t])


def test_min_visible_drops_unseen_ground_truth_only():
    """Ground truth no camera sees (visible < min_visible) leaves mAP; predictions are untouched."""
    p, t = one_frame(n=4)
    p = {k: v[:2] for k, v in p.items()}  # the two hidden objects are not predicted
    t["visible"] = torch.tensor([1.0, 0.3, 0.0, 0.01])
    with_all = Detection3DMetric(CLASSES)
    with_all.update([p], [t])
    assert with_all.compute()["map"] < 0.5
    seen = Detection3DMetric(CLASSES, min_visible=0.05)
    seen.update([p], [t])
    assert seen.compute()["map"] == pytest.approx(1.0)
    bad = Detection3DMetric(CLASSES, min_visible=0.05)
    t["visible"] = torch.tensor([1.0, 0.3])
    with pytest.raises(ValueError, match="visible has 2 entries for 4 boxes"):
        bad.update([p], [t])
    with pytest.raises(ValueError, match="min_visible"):
        Detection3DMetric(CLASSES, min_visible=1.5)


def test_tp_errors_without_a_match_are_undefined_not_one():
    """Before: ate/ase/aoe/ave = 1.0 (nuScenes' calc_tp placeholder) when nothing matched, which read as a good
    1 m/s velocity error and passed ``ave <= 4.0``. Now NaN, with the reason."""
    from hydranet.metrics.base import NO_GROUND_TRUTH
    from hydranet.metrics.detection3d import calc_tp

    p, t = one_frame(shift=(5.0, 0.0))  # every prediction 5 m off: no match at the 2 m TP threshold
    m = Detection3DMetric(CLASSES)
    m.update([p], [t])
    out = m.compute()
    assert out["map"] < 1.0 and out["ap@4m"] == 0.0
    for err in ("ate", "ase", "aoe", "ave"):
        assert np.isnan(out[err]) and np.isnan(out[f"{err}/car"]), err
        assert m.undefined_reason(err).startswith("no match")
    assert m.undefined_reason("ap/truck") == NO_GROUND_TRUTH and m.undefined_reason("ate/truck") == NO_GROUND_TRUTH
    assert calc_tp(None, "ave") == 1.0  # the devkit's own convention is kept where it is asked for
    empty = Detection3DMetric(CLASSES)
    empty.update([p], [{**t, "boxes": t["boxes"][:0], "classes": t["classes"][:0], "velocity": t["velocity"][:0]}])
    assert np.isnan(empty.compute()["ave"]) and empty.undefined_reason("ave") == NO_GROUND_TRUTH


def test_unmatched_class_does_not_pull_the_mean_towards_one():
    """nuScenes' mean skips NaN; a class with ground truth and no match used to enter it as 1.0."""
    cars, t_cars = one_frame(shift=(1.5, 0.0), n=4, cls=0)  # matched, ATE 1.5 m
    peds, t_peds = one_frame(shift=(8.0, 0.0), n=4, cls=2)  # never matched
    t_peds["boxes"][:, 1] += 50.0
    peds["boxes"][:, 1] += 50.0
    p = {k: torch.cat([cars[k], peds[k]]) for k in cars}
    t = {k: torch.cat([t_cars[k], t_peds[k]]) for k in t_cars}
    m = Detection3DMetric(CLASSES)
    m.update([p], [t])
    out = m.compute()
    assert out["ate/car"] == pytest.approx(1.5) and np.isnan(out["ate/pedestrian"])
    assert out["ate"] == pytest.approx(1.5)  # before: (1.5 + 1.0) / 2 = 1.25, better than any real match


def test_ave_without_predicted_velocity_says_so():
    p, t = one_frame()
    del p["velocity"]
    m = Detection3DMetric(CLASSES)
    m.update([p], [t])
    out = m.compute()
    assert out["ate"] == pytest.approx(0.0) and np.isnan(out["ave"])  # before: 1.0 (cummean of all-NaN)
    assert m.undefined_reason("ave").startswith("no velocity predicted")


def test_nuscenes_class_rules_static_barriers_unoriented_cones_and_class_ranges():
    from hydranet.metrics.detection3d import NUSCENES_CLASS_RANGE
    from hydranet.setup import NUSCENES_CLASSES

    # a barrier 10 m ahead, a cone 20 m left, a car 55 m ahead: matched at 2 m with wrong yaw and velocity
    g = torch.tensor([[10.0, 0, 0.5, 2, 0.6, 1, 0.0], [0, 20.0, 0.4, 0.4, 0.4, 0.8, 0],
                      [55.0, 0, 0.8, 4.5, 1.9, 1.6, 0]])
    classes = torch.tensor([NUSCENES_CLASSES.index(c) for c in ("barrier", "traffic_cone", "car")])
    pred = {"boxes": g + torch.tensor([0.5, 0, 0, 0, 0, 0, 0.3]), "scores": torch.ones(3), "classes": classes,
            "velocity": torch.full((3, 2), 2.0)}
    target = {"boxes": g, "classes": classes, "velocity": torch.zeros(3, 2)}
    m = Detection3DMetric(NUSCENES_CLASSES)
    m.update([pred], [target])
    r = m.compute()
    assert r["aoe/barrier"] == pytest.approx(0.3) and np.isnan(r["ave/barrier"])  # barriers: oriented, never move
    assert np.isnan(r["aoe/traffic_cone"]) and np.isnan(r["ave/traffic_cone"])  # cones: neither
    # never scored, whatever the frames: said so even where no object of the class is there
    assert m.unscored("ave/barrier") == "not scored for static 'barrier' (as nuScenes)"
    assert m.unscored("aoe/traffic_cone").startswith("not scored for unoriented 'traffic_cone'")
    assert m.unscored("ave/car") is None and m.unscored("aoe/barrier") is None and m.unscored("ave") is None
    empty = Detection3DMetric(NUSCENES_CLASSES)
    assert empty.undefined_reason("ave/traffic_cone") == m.unscored("ave/traffic_cone")
    assert r["ave/car"] == pytest.approx(2.0 * 2 ** 0.5)
    assert r["ap/car"] == pytest.approx(0.75)  # 0.5 m off: matched at 1, 2 and 4 m, not 0.5 m
    ranged = Detection3DMetric(NUSCENES_CLASSES, class_ranges=NUSCENES_CLASS_RANGE)
    ranged.update([pred], [target])
    r = ranged.compute()  # nuScenes' class ranges: the car at 55 m is beyond its 50 m, the cone inside its 30 m
    assert np.isnan(r["ap/car"]) and r["ap/traffic_cone"] == pytest.approx(0.75)
