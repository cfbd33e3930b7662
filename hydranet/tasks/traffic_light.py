"""Traffic-light detection and state per camera: one class-agnostic CenterNet heatmap finds the lights,
a state branch read at each peak classifies them (red, yellow, green).

Detection and state are separate outputs because they learn from different evidence: every light,
whatever its state, teaches the heatmap where lights are (a heatmap per state would give red — the
rarer, costlier state — a third of the positives and left it below the decode threshold), while the
state branch is trained with a class-balanced cross-entropy (each state present in the batch weighs
the same), so a rare red is not outvoted by the greens. Lights are small: the head reads stride 4 by
default. An optional ``lane`` branch classifies which lane the light governs (ego-relative index
``-lane_range..lane_range``, 0 = ego lane), read at the peak like the box and the state.

Head outputs: ``heatmap [1]``, ``offset [2]``, ``log_size [2]``, ``state [3]`` logits and, if
``lane_range > 0``, ``lane [2*lane_range+1]`` logits.
Decoded (per sample): ``dict(boxes [K,4] px, scores [K], state [K], state_probs [K,3], camera [K], lane [K])``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from hydranet.data import LIGHT_STATES, Batch
from hydranet.metrics import Metric, TemporalTrafficLightMetric
from hydranet.tasks.base import HeadContext, register_task
from hydranet.tasks.centernet2d import CenterNet2DOptions, centernet_bias_init, centernet_losses, decode_boxes2d
from hydranet.tasks.heads import CameraTask
from hydranet.tasks.heatmaps import boxes_to_draw
from hydranet.tasks.losses import of_present
from hydranet.viz import draw_traffic_lights


class TrafficLightOptions(CenterNet2DOptions):
    """``CenterNet2DOptions`` sized for small lights, + the lane branch: ``lane_range`` r (lane classes
    -r..r, 0 disables the branch) and ``lane_weight``."""

    width: int = Field(16, ge=1)
    depth: int = Field(2, ge=0)  # stride 4 is costly: two narrow shared convs rather than per-output branches
    branch_depth: int = Field(0, ge=0)
    lane_range: int = Field(2, ge=0)  # lane classes -r..r; 0 disables the lane branch
    lane_weight: float = 0.2
    state_weight: float = 1.0  # class-balanced cross-entropy of the state read at each light's peak
    max_detections: int = Field(32, ge=1)
    # Unlike detection2d, the light metric (accuracy, precision, recall) scores the decoded set at one
    # operating point, so decode keeps only confident lights.
    score_threshold: float = Field(0.3, ge=0, le=1)
    prior_size_px: float = Field(6.0, gt=0)  # lights are ~4 × 10 px in the demo cameras


@register_task
class TrafficLight(CameraTask):
    """Traffic-light detection (one CenterNet heatmap) and state (a branch read at each peak) per camera.

    Label ``traffic_light``: boxes ``[L, 4]`` px, ``camera``, ``state`` (``LIGHT_STATES``), ``lane``.
    Metric: balanced state accuracy (``TemporalTrafficLightMetric``, + flicker on sequences)."""

    name = "traffic_light"
    preferred_stride = 4
    label = "traffic_light"
    Options = TrafficLightOptions
    states: tuple[str, ...] = LIGHT_STATES

    def build_head(self, ctx: HeadContext) -> nn.Module:
        """Camera head with ``heatmap [1]``, ``offset [2]``, ``log_size [2]``, ``state [3]`` and, when
        ``lane_range > 0``, ``lane [2r+1]`` logits per cell."""
        outputs = {"heatmap": 1, "offset": 2, "log_size": 2, "state": len(self.states)}
        if self.cfg.lane_range > 0:
            outputs["lane"] = 2 * self.cfg.lane_range + 1
        return self.camera_head(ctx, outputs, bias_init=centernet_bias_init(self, ctx))

    def loss(self, outputs: dict[str, Tensor], batch: Batch) -> dict[str, Tensor]:
        """``centernet_losses`` on the class-agnostic heatmap + ``state_weight`` × class-balanced cross-entropy
        of the state + ``lane_weight`` × cross-entropy of the governed lane, both read at each light's peak
        (lanes beyond ±r count as the outermost class). Keys ``loss``, ``heatmap``, ``offset``, ``box``,
        ``state`` (+ ``lane``). Raises ``ValueError`` as ``centernet_losses`` does, or on a state index
        outside ``LIGHT_STATES``."""
        parts, enc, present = centernet_losses(self, outputs, batch, None, 1)
        zero = torch.zeros((), device=parts["loss"].device)
        parts["state"] = zero  # same log keys every step
        r = self.cfg.lane_range
        if r > 0:
            parts["lane"] = zero
        if enc is None or enc.sample.numel() == 0:
            return parts
        labels = batch.labels[self.label]
        pairs = list(zip(enc.sample.tolist(), enc.object_index.tolist(), strict=True))
        n = outputs["heatmap"].shape[1]
        flat = enc.sample * n + enc.camera

        def at_peaks(key: str) -> Tensor:
            return of_present(outputs[key], present).flatten(0, 1)[flat, :, enc.ys, enc.xs].float()

        state = torch.stack([labels[int(present[s])]["state"][m] for s, m in pairs]).long().to(enc.sample.device)
        if bool(((state < 0) | (state >= len(self.states))).any()):
            raise ValueError(f"{self.name}: a light state outside [0, {len(self.states)}) ({self.states})")
        per_light = F.cross_entropy(at_peaks("state"), state, reduction="none")
        # Mean over the states present of each state's mean loss: every state weighs the same.
        present_states = state.unique()
        state_loss = torch.stack([per_light[state == k].mean() for k in present_states]).mean()
        parts["loss"] = parts["loss"] + self.cfg.state_weight * state_loss
        parts["state"] = state_loss.detach()
        if r > 0 and all("lane" in labels[int(i)] for i in present):
            lanes = [labels[int(present[s])]["lane"][m] for s, m in pairs]
            # Lanes beyond the modelled range are clamped to the outermost class: "far left/right".
            target = (torch.stack(lanes).long().to(enc.sample.device).clamp(-r, r) + r)
            lane_loss = F.cross_entropy(at_peaks("lane"), target)
            parts["loss"] = parts["loss"] + self.cfg.lane_weight * lane_loss
            parts["lane"] = lane_loss.detach()
        return parts

    @torch.no_grad()
    def decode(self, outputs: dict[str, Tensor], batch: Batch) -> list[dict[str, Tensor]]:
        """Per sample ``dict(boxes [K, 4] px, scores [K], state [K], state_probs [K, 3], camera [K], lane [K])``
        (lane 0 when the branch is off), best first, ``scores >= score_threshold``; ``state`` is the most
        probable state at the peak, ``state_probs`` its softmax."""
        image_hw = tuple(batch.images.shape[-2:])
        r = self.cfg.lane_range
        stride = self.output_stride(outputs["heatmap"], batch)
        result = []
        for b in range(len(batch)):
            d = decode_boxes2d(outputs["heatmap"][b], outputs["offset"][b], outputs["log_size"][b], stride,
                               image_hw, self.cfg.max_detections, self.cfg.score_threshold, self.cfg.nms_kernel)
            probs = outputs["state"][b][d.camera, :, d.ys, d.xs].float().softmax(-1)
            if r > 0:
                lane = outputs["lane"][b][d.camera, :, d.ys, d.xs].argmax(-1) - r
            else:
                lane = torch.zeros_like(d.channel)
            result.append({"boxes": d.boxes.cpu(), "scores": d.scores.cpu(), "state": probs.argmax(-1).cpu(),
                           "state_probs": probs.cpu(), "camera": d.camera.cpu(), "lane": lane.cpu()})
        return result

    def make_metric(self) -> Metric:
        """``TemporalTrafficLightMetric`` over ``LIGHT_STATES``: balanced accuracy, + state flicker on sequences."""
        # Plain TrafficLightMetric on single frames; on sequences it adds state flicker.
        return TemporalTrafficLightMetric(states=self.states)

    def draw(self, views: Any, decoded: dict[str, Tensor], ground_truth: bool = False) -> None:
        """Lights in their state colours with the governed lane (ground truth dashed, predictions with
        ``scores >= draw_threshold``); an empty set leaves a note in ``views``."""
        decoded = boxes_to_draw(self, views, decoded, ground_truth, "labelled lights")
        if decoded is None:
            return
        # State colours for both; ground truth dashed.
        draw_traffic_lights(views, decoded["boxes"], decoded["camera"], decoded["state"], lane=decoded.get("lane"),
                            scores=None if ground_truth else decoded.get("scores"), dashed=ground_truth)
