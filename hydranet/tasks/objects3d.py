"""BEV 3D objects: CenterPoint-style (Yin et al. 2021) centre heatmaps on the ``BevGrid``.

Each object is a Gaussian peak on its class's heatmap at the BEV cell holding its centre; at that cell
the head regresses the sub-cell ``offset`` (row, col), ``z`` (box centre height, m), ``log_size``
(log l, w, h), ``rot`` = (sin yaw, cos yaw) — continuous, unlike a wrapped angle — and ``velocity``
(vx, vy ego m/s). All metres <-> cells conversion goes through ``BevGrid.metres_to_index`` /
``index_to_metres``; if the BEV features are coarser than the grid, the feature map's scale
relative to the grid (rows/rows) is applied on top.
Loss: penalty-reduced focal loss + weighted L1 on the regression targets at the peaks.
Decoded (per sample): ``dict(boxes [K,7] (x,y,z,l,w,h,yaw), velocity [K,2], scores [K], classes [K])``.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, field_validator
from torch import Tensor, nn

from hydranet.data import Batch
from hydranet.geometry import BevGrid
from hydranet.metrics import NUSCENES_CLASS_RANGE, Metric, TemporalDetection3DMetric
from hydranet.tasks.base import HeadContext, Task, register_task
from hydranet.tasks.heads import BevHead, BevHeadOptions, prior_bias
from hydranet.tasks.heatmaps import boxes_to_draw, draw_gaussian, gaussian_radius, heatmap_focal_loss, topk_peaks
from hydranet.tasks.losses import of_present, present_index
from hydranet.viz import draw_boxes3d

# Regression channels, in this order in the stacked target: offset 2, z 1, log_size 3, rot 2, velocity 2.
_REG = {"offset": 2, "z": 1, "log_size": 3, "rot": 2, "velocity": 2}
# BEV-distance bands (m) of the per-range mAP figures (``map@0-15m`` ...), inside the grid region.
RANGE_BINS = (0.0, 15.0, 30.0)


class Objects3DOptions(BevHeadOptions):
    """Options of ``objects3d``: Gaussian ``min_overlap`` and ``min_radius`` (feature cells), heatmap and
    regression weights, per-group L1 ``code_weights`` (offset, z, log_size, rot, velocity; an unknown
    group is a ``ValueError``), decode ``max_detections``, ``score_threshold``, ``draw_threshold`` and
    ``nms_kernel``."""

    min_overlap: float = Field(0.1, gt=0, lt=1)  # CenterPoint's value: BEV boxes are small vs the grid
    min_radius: int = Field(2, ge=0)
    heatmap_weight: float = 1.0
    regression_weight: float = 0.25
    # Per-group L1 weights (CenterPoint's "code weights"); velocity is the noisiest target.
    code_weights: dict[str, float] = Field(default_factory=lambda: {"offset": 1.0, "z": 1.0, "log_size": 1.0,
                                                                    "rot": 1.0, "velocity": 0.2})
    # Objects seen by no camera in this frame (visible fraction below this) are ignored by the heatmap loss
    # and by mAP (nuScenes drops boxes without a lidar/radar point the same way); the temporal metric's
    # occluded recall scores them. 0 learns and scores every object (a temporal model can know them).
    min_visible: float = Field(0.05, ge=0, le=1)
    max_detections: int = Field(200, ge=1)
    # Scored region: "grid" = boxes on the BEV grid; "nuscenes" = also nuScenes' per-class ranges (50 m vehicles,
    # 40 m pedestrians and two-wheelers, 30 m cones and barriers), the nuScenes detection benchmark's filter.
    eval_ranges: Literal["grid", "nuscenes"] = "grid"
    score_threshold: float = Field(0.1, ge=0, le=1)  # decode: low, the AP needs the low-score tail
    draw_threshold: float = Field(0.3, ge=0, le=1)  # pictures show only confident boxes
    nms_kernel: int = Field(3, ge=1)

    @field_validator("code_weights")
    @classmethod
    def _known_groups(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(v) - set(_REG))
        if unknown:
            raise ValueError(f"unknown regression groups {unknown}; known: {list(_REG)}")
        return v


def encode_objects3d(targets: list[dict[str, Tensor]], grid: BevGrid, feat_rc: tuple[int, int], num_classes: int,
                     min_overlap: float, min_radius: int, min_visible: float = 0.0) -> dict[str, Tensor]:
    """Heatmaps ``[S, C, h, w]``, an ignore mask ``weight [S, 1, h, w]`` and per-object cells + regression
    targets ``[M, 10]`` for present samples.

    Objects whose ``visible`` fraction (when the label has one) is below ``min_visible`` are not learnt:
    their Gaussian footprint is masked out of the heatmap loss (neither positive nor negative), so a
    single-frame model is neither taught to hallucinate what no camera sees nor punished for finding it."""
    h, w = feat_rc
    sr, sc = h / grid.rows, w / grid.cols  # feature cells per grid cell
    heat = torch.zeros(len(targets), num_classes, h, w)
    weight = torch.ones(len(targets), 1, h, w)
    sample, ys, xs, reg = [], [], [], []
    for s, t in enumerate(targets):
        boxes = t["boxes"].detach().float().cpu().reshape(-1, 7)
        classes = t["classes"].long().cpu()
        velocity = t.get("velocity", torch.zeros(len(boxes), 2)).detach().float().cpu().reshape(-1, 2)
        if not bool(torch.isfinite(boxes).all()):  # int(floor(NaN)) would fail deep in the loop
            raise ValueError(f"objects3d: present sample {s}: 'boxes' holds non-finite values (NaN or inf)")
        if bool(torch.isinf(velocity).any()):  # NaN = unknown (not regressed); inf is an error
            raise ValueError(f"objects3d: present sample {s}: 'velocity' holds inf")
        row, col = grid.metres_to_index(boxes[:, 0], boxes[:, 1])
        fr, fc = row * sr, col * sc
        # Box footprint in feature cells: length runs along x (rows), width along y (cols).
        radius = gaussian_radius(boxes[:, 3] / grid.cell * sr, boxes[:, 4] / grid.cell * sc, min_overlap)
        hidden = torch.zeros(len(boxes), dtype=torch.bool)
        if t.get("visible") is not None and min_visible > 0:
            hidden = t["visible"].detach().float().cpu().reshape(-1) < min_visible
        # Per-object values as Python numbers, computed once per sample (the same float32 arithmetic, element-wise):
        # a per-object tensor op costs more than the arithmetic.
        rows, cols = fr.floor().long().tolist(), fc.floor().long().tolist()
        frs, fcs, radii, heights = fr.tolist(), fc.tolist(), radius.tolist(), boxes[:, 2].tolist()
        log_sizes = boxes[:, 3:6].clamp(min=1e-3).log().tolist()
        sin_yaw, cos_yaw = torch.sin(boxes[:, 6]).tolist(), torch.cos(boxes[:, 6]).tolist()
        class_ids, hidden_flags, velocities = classes.tolist(), hidden.tolist(), velocity.tolist()
        for m, (iy, ix) in enumerate(zip(rows, cols, strict=True)):
            if not (0 <= iy < h and 0 <= ix < w):
                continue  # centre off the grid: nothing to learn here
            r = max(min_radius, int(radii[m]))
            if hidden_flags[m]:
                weight[s, 0, max(iy - r, 0):iy + r + 1, max(ix - r, 0):ix + r + 1] = 0.0
                continue
            c = class_ids[m]
            if not 0 <= c < num_classes:
                raise ValueError(f"objects3d: object {m} of present sample {s} has class {c} "
                                 f"outside [0, {num_classes})")
            draw_gaussian(heat[s, c], ix, iy, r)
            reg.append([frs[m] - iy, fcs[m] - ix, heights[m], *log_sizes[m], sin_yaw[m], cos_yaw[m],
                        *velocities[m]])
            sample.append(s)
            ys.append(iy)
            xs.append(ix)
    # A hidden object's footprint never hides another object's peak.
    weight = torch.maximum(weight, heat.amax(1, keepdim=True).ge(1.0).float())
    return {"heatmap": heat, "weight": weight, "sample": torch.tensor(sample, dtype=torch.long),
            "ys": torch.tensor(ys, dtype=torch.long), "xs": torch.tensor(xs, dtype=torch.long),
            "reg": torch.tensor(reg, dtype=torch.float32).reshape(-1, 10)}


@register_task
class Objects3D(Task):
    """3D objects on the BEV grid with CenterPoint (Yin et al. 2021); see the module doc.

    Label ``objects3d``: ego-frame boxes ``[M, 7]`` (x, y, z, l, w, h, yaw) in metres/radians, velocity
    ``[M, 2]`` m/s (NaN = unknown), ``classes`` (ids into ``setup.classes["objects3d"]``). Boxes live on
    ``setup.grid``. Metric: nuScenes-style mAP and TP errors (``TemporalDetection3DMetric``, + occlusion and
    flicker keys on sequences)."""

    name = "objects3d"
    space = "bev"
    label = "objects3d"
    Options = Objects3DOptions

    @property
    def classes(self) -> tuple[str, ...]:
        """The class vocabulary: ``setup.classes["objects3d"]`` (heatmap channel c is ``classes[c]``)."""
        return self.vocabulary()

    def build_head(self, ctx: HeadContext) -> nn.Module:
        """``BevHead`` on ``[B, C_bev, R, C']`` with ``heatmap [C]`` and regression outputs offset 2, z 1,
        log_size 3, rot 2 (sin, cos yaw), velocity 2."""
        cfg = self.cfg
        return BevHead(ctx, {"heatmap": len(self.classes), **_REG}, cfg.width, cfg.depth, cfg.branch_depth,
                       bias_init={"heatmap": prior_bias(0.01)})

    def _grid(self) -> BevGrid:
        if self.setup.grid is None:
            raise ValueError(f"{self.name}: the setup has no BEV grid (setup.grid)")
        return self.setup.grid

    def targets(self, batch: Batch) -> list[Any]:
        """Ground truth whose centre lies on the BEV grid: the head cannot place a centre off the grid, so
        real datasets' far boxes (nuScenes annotates beyond 50 m) are outside the evaluated range, as the
        nuScenes detection eval drops boxes beyond its class ranges."""
        out = super().targets(batch)
        grid = self._grid()
        for i, t in enumerate(out):
            if t is None or len(t["boxes"]) == 0:
                continue
            boxes = t["boxes"].reshape(-1, 7)
            _, _, inside = grid.cell_indices(boxes[:, 0].cpu(), boxes[:, 1].cpu())
            if not bool(inside.all()):
                m = len(boxes)
                out[i] = {k: v[inside.to(v.device)] if isinstance(v, Tensor) and v.ndim and len(v) == m else v
                          for k, v in t.items()}
        return out

    def loss(self, outputs: dict[str, Tensor], batch: Batch) -> dict[str, Tensor]:
        """``{"loss", "heatmap", "regression"}``: focal loss on the heatmaps + code-weighted L1 on the
        regression targets at the peaks, both normalised by the objects of present samples; NaN targets
        (unknown velocity) are not regressed.

        Raises ``ValueError`` on a heatmap that is not ``[B, C, R, C']``, non-finite boxes, inf velocity or
        a class out of range."""
        heat = outputs["heatmap"]
        if heat.ndim != 4 or heat.shape[0] != len(batch):
            raise ValueError(f"{self.name}: expected [B={len(batch)}, C, R, C'] heatmap, got {tuple(heat.shape)}")
        present = present_index(batch, self.label, heat.device)
        zero = self.zero_loss(outputs)
        if present.numel() == 0:
            return {"loss": zero, "heatmap": zero.detach(), "regression": zero.detach()}
        targets = [batch.labels[self.label][int(i)] for i in present]
        enc = encode_objects3d(targets, self._grid(), tuple(heat.shape[-2:]), len(self.classes),
                               self.cfg.min_overlap, self.cfg.min_radius, self.cfg.min_visible)
        dev = heat.device
        focal, num_pos = heatmap_focal_loss(of_present(heat, present).float(), enc["heatmap"].to(dev),
                                            enc["weight"].to(dev))
        norm = num_pos.clamp(min=1.0)
        sample, ys, xs = enc["sample"].to(dev), enc["ys"].to(dev), enc["xs"].to(dev)
        pred = torch.cat([of_present(outputs[k], present)[sample, :, ys, xs] for k in _REG], -1).float()
        weights = torch.cat([torch.full((n,), self.cfg.code_weights.get(k, 1.0)) for k, n in _REG.items()]).to(dev)
        target = enc["reg"].to(dev)
        # Unknown targets (NaN velocity: a lone keyframe has none) are not regressed.
        err = torch.where(torch.isfinite(target), (pred - target.nan_to_num()).abs(), torch.zeros_like(pred))
        reg = (err * weights).sum() / norm
        hm = focal / norm
        total = self.cfg.heatmap_weight * hm + self.cfg.regression_weight * reg + zero
        return {"loss": total, "heatmap": hm.detach(), "regression": reg.detach()}

    @torch.no_grad()
    def decode(self, outputs: dict[str, Tensor], batch: Batch) -> list[dict[str, Tensor]]:
        """Per sample ``dict(boxes [K, 7] (x, y, z, l, w, h, yaw) ego m/rad, velocity [K, 2] m/s, scores [K],
        classes [K])`` from max-pool NMS + top-k peaks with ``scores >= score_threshold``."""
        grid = self._grid()
        heat = torch.sigmoid(outputs["heatmap"].float())
        h, w = heat.shape[-2:]
        sr, sc = h / grid.rows, w / grid.cols
        scores, classes, ys, xs = topk_peaks(heat, self.cfg.max_detections, self.cfg.nms_kernel)
        result = []
        for b in range(heat.shape[0]):
            keep = scores[b] >= self.cfg.score_threshold
            s, c, y, x = scores[b][keep], classes[b][keep], ys[b][keep], xs[b][keep]
            read = {k: outputs[k][b][:, y, x].T.float() for k in _REG}
            row = (y.float() + read["offset"][:, 0]) / sr
            col = (x.float() + read["offset"][:, 1]) / sc
            ex, ey = grid.index_to_metres(row, col)
            size = read["log_size"].clamp(-5.0, 5.0).exp()
            yaw = torch.atan2(read["rot"][:, 0], read["rot"][:, 1])
            boxes = torch.stack([ex, ey, read["z"][:, 0], size[:, 0], size[:, 1], size[:, 2], yaw], -1)
            result.append({"boxes": boxes.cpu(), "velocity": read["velocity"].cpu(), "scores": s.cpu(),
                           "classes": c.cpu()})
        return result

    def make_metric(self) -> Metric:
        """``TemporalDetection3DMetric`` on the grid region, with per-range mAP over ``RANGE_BINS`` (m), on objects
        visible now (``min_visible``); objects hidden now count in ``occluded_recall``."""
        # Scored on the grid only: the world labels objects out to its cull distance, the head can place
        # them only on the grid (encode drops off-grid centres), so both sides see the same region.
        # Plain Detection3DMetric on single frames; on sequences it adds occlusion persistence and flicker.
        grid = self._grid()
        ranges = NUSCENES_CLASS_RANGE if self.cfg.eval_ranges == "nuscenes" else None
        return TemporalDetection3DMetric(classes=self.classes, region=(grid.x_range, grid.y_range),
                                         range_bins=RANGE_BINS, score_threshold=self.cfg.draw_threshold,
                                         grid_extent=(*grid.x_range, *grid.y_range),
                                         min_visible=self.cfg.min_visible, class_ranges=ranges)

    def draw(self, views: Any, decoded: dict[str, Tensor], ground_truth: bool = False) -> None:
        """Boxes in the BEV panel: ground truth dashed, predictions with ``scores >= draw_threshold``; an empty
        set leaves a note in ``views``."""
        decoded = boxes_to_draw(self, views, decoded, ground_truth)
        if decoded is None:
            return
        draw_boxes3d(views, decoded["boxes"], decoded["classes"], dashed=ground_truth, names=self.classes)
