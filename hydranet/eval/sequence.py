"""Clips: which frames a video evaluation streams, in order, through the model's memory.

A *clip* is a list of consecutive dataset indices of one scene. ``hydranet.eval.loop.evaluate_clips`` streams
each from the reset state (the suite runner streams the clips its plan expands, ``clip_indices``); every frame
is scored, its targets carrying ``sequence = (scene_id, frame_index)`` so occlusion persistence and flicker can
follow objects across frames. ``sequence_starts`` is the one rule by which a stream's row starts over.
"""

from __future__ import annotations

from torch.utils.data import Dataset

from hydranet.data import sequence_keys


def clip_indices(anchors: list[int], frames_per_scene: int, length: int) -> list[list[int]]:
    """The clip of ``length`` consecutive frames *ending* at each anchor (shifted to fit inside the anchor's
    scene; shortened when the scene is shorter). Scene ``s`` holds indices ``[s·F, (s+1)·F)``."""
    if length < 1:
        raise ValueError(f"sequence length must be >= 1, got {length}")
    clips = []
    for a in anchors:
        start_of_scene = a - a % frames_per_scene
        n = min(length, frames_per_scene)
        end = max(a, start_of_scene + n - 1)
        clips.append(list(range(end - n + 1, end + 1)))
    return clips


def scene_runs(dataset: Dataset, limit: int | None = None) -> list[list[int]]:
    """The dataset's indices ``[0, limit)`` split into runs of consecutive frames of one scene (clips)."""
    scenes, frames = sequence_keys(dataset)
    n = len(scenes) if limit is None else min(limit, len(scenes))
    runs: list[list[int]] = []
    for i in range(n):
        if runs and scenes[i] == scenes[i - 1] and frames[i] == frames[i - 1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def sequence_starts(where: list[tuple[str, int]], previous: list[tuple[str, int]]) -> list[bool]:
    """Per stream row, whether its ``(scene_id, frame_index)`` starts a new sequence after the row's ``previous``
    one: another scene, or a frame index that does not grow (the rule ``Streamer`` resets its memory by and
    ``SequenceTrackers`` their tracks). Raises ``ValueError`` when the two lists differ in length."""
    return [scene != last_scene or frame <= last_frame
            for (scene, frame), (last_scene, last_frame) in zip(where, previous, strict=True)]
