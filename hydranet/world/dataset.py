"""``SyntheticWorld``: the embedded driving world as a map-style torch ``Dataset``, rendering its ``Setup``.

Sample ``i`` is frame ``i % frames_per_scene`` of scene ``i // frames_per_scene``; it is a pure function
of ``(config, i)``: any index can be rendered alone, in any order, in any worker process.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from typing import Any

import torch
from torch.utils.data import Dataset

from hydranet.data import Sample
from hydranet.setup import class_names
from hydranet.world import labels as world_labels
from hydranet.world.config import WorldConfig
from hydranet.world.render import render_frame
from hydranet.world.scene import Scene, generate_scene

# Bumped whenever the same config renders other bytes or labels, so shards written before are not taken as up to
# date (2: a light's state is labelled only where its lit lamp shows).
GENERATOR_VERSION = "hydranet-world/2"
WORLD_LABELS: tuple[str, ...] = ("detection2d", "traffic_light", "objects3d", "lanes", "lane_lines", "drivable",
                                 "depth", "semantic", "instance", "bev_semantic", "ego_path")


class SyntheticWorld(Dataset):
    """``world[i] -> Sample`` with every label in ``WORLD_LABELS`` (minus those ``drop_labels`` drops)."""

    def __init__(self, config: WorldConfig | None = None, **overrides: Any) -> None:
        if config is None:
            config = WorldConfig(**overrides)
        elif overrides:
            config = WorldConfig(**(config.model_dump() | overrides))
        self.config = config
        self.setup = config.rendered_setup  # what its frames are: Source.setup of the world
        rig = config.rendered_rig
        self.camera_names = rig.names
        self._K = rig.intrinsics(self.setup.image_size)  # each camera's K at the rendered size
        self._T = rig.extrinsics()
        self._scenes: OrderedDict[int, Scene] = OrderedDict()

    def __len__(self) -> int:
        return self.config.num_scenes * self.config.frames_per_scene

    @property
    def labels(self) -> tuple[str, ...]:
        """Every label a world sample can carry (``WORLD_LABELS``), before ``drop_labels``."""
        return WORLD_LABELS

    def scene(self, index: int) -> Scene:
        """The scene sample ``index`` belongs to (a few recent scenes are cached)."""
        sid = self._check(index) // self.config.frames_per_scene
        if sid not in self._scenes:
            self._scenes[sid] = generate_scene(self.config, sid)
            while len(self._scenes) > 4:
                self._scenes.popitem(last=False)
        return self._scenes[sid]

    def label_present(self, index: int, name: str) -> bool:
        """Whether sample ``index`` keeps label ``name`` (deterministic, needs no rendering)."""
        frac = self.config.drop_labels.get(name, 0.0)
        if frac <= 0.0:
            return True
        return random.Random(f"hydranet-world/{self.config.seed}/drop/{name}/{index}").random() >= frac

    def _check(self, index: int) -> int:
        if not isinstance(index, int) and hasattr(index, "__index__"):
            index = index.__index__()
        if not 0 <= index < len(self):
            raise IndexError(f"SyntheticWorld index {index} out of range [0, {len(self)})")
        return index

    def __getitem__(self, index: int) -> Sample:
        index = self._check(index)
        threads = self.config.render_threads
        before = torch.get_num_threads()
        if threads and threads != before:
            torch.set_num_threads(threads)
        try:
            return self._render(index)
        finally:
            if threads and threads != before:
                torch.set_num_threads(before)

    def _render(self, index: int) -> Sample:
        cfg = self.config
        scene = self.scene(index)
        fi = index % cfg.frames_per_scene
        t = fi / cfg.rate_hz
        frame = scene.frame(t, cfg.cull_distance)
        noise_seed = random.Random(f"hydranet-world/{cfg.seed}/noise/{index}").getrandbits(62)
        h, w = self.setup.image_size
        out = render_frame(frame, self._K, self._T, h, w, sensor_noise=cfg.sensor_noise,
                           noise_seed=noise_seed, max_depth=cfg.max_depth)
        want = {name for name in WORLD_LABELS if self.label_present(index, name)}
        labels: dict[str, Any] = {}
        det = None
        if want & {"detection2d", "traffic_light", "objects3d"}:
            det = world_labels.detection2d(frame, out, cfg.min_visible_pixels, cfg.min_visible_fraction)
            if "detection2d" in want:
                labels["detection2d"] = world_labels.in_vocabulary(det, class_names(self.setup, "detection2d"))
            if "traffic_light" in want:
                labels["traffic_light"] = world_labels.traffic_lights(frame, det, out)
        objects = world_labels.objects3d(frame, det) if want & {"objects3d", "bev_semantic"} else None
        if "objects3d" in want:
            labels["objects3d"] = world_labels.in_vocabulary(objects, class_names(self.setup, "objects3d"))
        dense = {"lanes": out.lanes, "drivable": out.drivable, "depth": out.depth.float(), "semantic": out.semantic,
                 "instance": out.instance}
        labels |= {k: v for k, v in dense.items() if k in want}
        if "lane_lines" in want:
            labels["lane_lines"] = world_labels.lane_lines(frame)
        if "bev_semantic" in want and self.setup.grid is not None:
            labels["bev_semantic"] = world_labels.bev_semantic(frame, objects, self.setup.grid)
        if "ego_path" in want:
            labels["ego_path"] = world_labels.ego_path(frame, cfg.path_steps, cfg.rate_hz)
        sample = Sample(images=out.images, intrinsics=self._K.clone(), T_ego_from_cam=self._T.clone(),
                        T_world_from_ego=out.T_world_from_ego.float(), timestamp=t,
                        scene_id=f"world-{cfg.seed}-{scene.index:06d}", camera_names=self.camera_names,
                        frame_index=fi, labels=labels)
        sample.validate(f"SyntheticWorld[{index}]")
        return sample
