"""Streaming export: the graph of a temporal model takes the memory state and the ego motion as inputs
and returns the new state, so the car's runtime owns the memory (no hidden state inside the graph).

Graph inputs, after ``images``, ``intrinsics``, ``T_ego_from_cam``, ``camera_valid``:

- ``T_world_from_ego`` float32 ``[B, 4, 4]``: the ego pose in the sequence's world frame (odometry);
- ``timestamp`` float32 ``[B]``: seconds, same clock as the state's entries;
- ``state.<name>`` for every field of ``hydranet.model.temporal.TemporalState`` (its order).

Graph outputs: the task outputs, then ``new_state.<name>`` in the same order. The caller feeds the
``new_state.*`` arrays back as ``state.*`` on the next frame, and zeros (``zero_state``) at a
sequence start. ``DeployedModel`` (``deploy/runtime.py``) does exactly that for ``hydranet infer``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from hydranet.deploy.manifest import InputSpec, StateOutputSpec
from hydranet.model import TemporalState

EGO_INPUTS = ("T_world_from_ego", "timestamp")
STATE_NOTE = ("Temporal graph: feed state.* = zeros at a sequence start (scene change, gap in the frames) and the "
              "previous call's new_state.* otherwise, together with the frame's T_world_from_ego and timestamp.")


def state_input_names() -> list[str]:
    """Graph input names of the temporal memory, ``state.<name>`` for each ``TemporalState`` tensor."""
    return [f"state.{n}" for n in TemporalState.names()]


def state_output_names() -> list[str]:
    """Graph output names of the updated memory, ``new_state.<name>`` for each ``TemporalState`` tensor."""
    return [f"new_state.{n}" for n in TemporalState.names()]


class StreamingGraph(nn.Module):
    """``HydraNet.forward_step`` restricted to ``tasks`` with flat tensor inputs and outputs."""

    def __init__(self, model: nn.Module, tasks: list[str], output_keys: list[tuple[str, str]]):
        super().__init__()
        self.model = model
        self.tasks = list(tasks)
        self.output_keys = list(output_keys)

    def forward(self, images: Tensor, intrinsics: Tensor, T_ego_from_cam: Tensor, camera_valid: Tensor,
                T_world_from_ego: Tensor, timestamp: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        """One frame: the ``ExportGraph`` inputs plus ego pose ``[B, 4, 4]`` (world frame, metres), timestamp
        ``[B]`` (seconds) and the ``TemporalState`` tensors -> task outputs (``output_keys`` order), new state."""
        out, new = self.model.forward_step(images, intrinsics, T_ego_from_cam, T_world_from_ego, timestamp,
                                           TemporalState.from_tensors(state), tasks=self.tasks,
                                           camera_valid=camera_valid)
        return (*(out[t][k] for t, k in self.output_keys), *new.tensors())


def example_state_inputs(model: nn.Module, batch: int) -> tuple[Tensor, ...]:
    """Ego motion and a non-trivial state for tracing (values never change the traced graph)."""
    pose = torch.eye(4).expand(batch, 4, 4).contiguous()
    return (pose, torch.zeros(batch), *model.init_state(batch).tensors())


def streaming_input_specs(model: nn.Module, batch: int) -> list[InputSpec]:
    """ExportManifest entries for the ego-motion and state inputs."""
    specs = [InputSpec(name="T_world_from_ego", shape=[batch, 4, 4], dtype="float32", layout="B,4,4",
                       description="ego pose in the sequence's world frame (ego: x fwd, y left, z up), metres"),
             InputSpec(name="timestamp", shape=[batch], dtype="float32", layout="B",
                       description="frame time in seconds (the clock of the state's entries)")]
    for name, t in zip(TemporalState.names(), model.init_state(batch).tensors(), strict=True):
        specs.append(InputSpec(name=f"state.{name}", shape=list(t.shape), dtype="float32", layout="see TemporalState",
                               description=f"video memory '{name}' from the previous call's new_state.{name}; "
                                           "zeros at a sequence start"))
    return specs


def state_output_specs(model: nn.Module, batch: int) -> list[StateOutputSpec]:
    """ExportManifest entries for the ``new_state.*`` outputs, each naming the ``state.*`` input it feeds."""
    return [StateOutputSpec(name=f"new_state.{name}", feeds=f"state.{name}", shape=list(t.shape))
            for name, t in zip(TemporalState.names(), model.init_state(batch).tensors(), strict=True)]


def zero_state(specs: list[Any]) -> dict[str, np.ndarray]:
    """The reset state as ONNX feeds, from the manifest's ``state.*`` input specs."""
    return {s.name: np.zeros(s.shape, dtype=np.float32) for s in specs if s.name.startswith("state.")}
