"""Checkpoints: safetensors tensors + a JSON state, written atomically, loaded without pickle.

A checkpoint is a directory::

    step_000100/
      model.safetensors       model weights (+ buffers), by state_dict name
      optimizer.safetensors   optimizer state per parameter ("<index>.<key>": AdamW's moments, Muon's momentum),
                              balancer tensors ("balancer.<name>")
      state.json              format, config, resolved model config, step, RNG states (base64), scheduler
                              position, skipped-step counter, trunk hash, optimizer param groups, ...

Writes go to a hidden temporary directory beside the target, every file is fsynced, and the
directory is renamed into place with ``os.replace``; then ``latest.json`` (the pointer resume uses)
is replaced the same way. A crash at any point leaves the previous checkpoint intact and pointed
to; leftovers named ``.tmp-*`` are removed by the next save.

Loading reads only safetensors and JSON — never ``torch.load``/pickle — so a checkpoint cannot
execute code. ``load_model(path) -> (model, checkpoint)`` is the one public loader of a model;
``load_checkpoint`` reads the raw tensors and state (resume, merge, the feature cache).

``trunk_hash`` (sha256 over names, dtypes, shapes and bytes of the ``trunk.*`` and ``neck.*``
tensors) identifies the shared feature extractor: the feature cache and ``merge`` compare it.
``files_sha256`` (sha256 of each safetensors file) is checked by every load: integrity in one place.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor, nn

from hydranet.config_errors import format_validation_error
from hydranet.model import ZOO_SCHEME, ModelConfig, ZooError, create_model, verified_directory
from hydranet.outputs import fsync_path as _fsync_dir  # the module's name for it: tests wrap it

__all__ = ["Checkpoint", "CheckpointError", "CheckpointWriteError", "b64_tensor", "load_checkpoint",
           "load_latest_valid", "load_model", "optimizer_from_tensors", "optimizer_to_tensors", "read_state",
           "resolve_checkpoint", "rng_state", "save_checkpoint", "set_rng_state", "trunk_hash"]

FORMAT = "hydranet-checkpoint/1"
_TRUNK_PREFIXES = ("trunk.", "neck.")


class CheckpointError(RuntimeError):
    """A missing, corrupt or mismatched checkpoint; the message names the path."""


class CheckpointWriteError(CheckpointError):
    """Writing a checkpoint failed (disk full, permissions); the previous checkpoint is intact."""


# ---------------------------------------------------------------------------------------------
# hashing and RNG
# ---------------------------------------------------------------------------------------------


def _tensor_bytes(t: Tensor) -> bytes:
    """The raw bytes of ``t`` (detached, on CPU, contiguous, any dtype) in row-major order."""
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def trunk_hash(model_or_state: nn.Module | dict[str, Tensor], prefixes: tuple[str, ...] = _TRUNK_PREFIXES) -> str:
    """sha256 of the shared feature extractor's tensors (weights and BatchNorm statistics)."""
    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    h = hashlib.sha256()
    for name in sorted(k for k in state if k.startswith(prefixes)):
        t = state[name]
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(_tensor_bytes(t))
    return h.hexdigest()


def b64_tensor(t: Tensor) -> str:
    """``_tensor_bytes(t)`` as a base64 string, for storing RNG states in ``state.json``."""
    return base64.b64encode(_tensor_bytes(t)).decode()


def _unb64(s: str) -> Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8).clone()


def rng_state() -> dict[str, Any]:
    """This process's torch (CPU + CUDA) RNG states as base64 strings."""
    out: dict[str, Any] = {"torch": b64_tensor(torch.get_rng_state())}
    if torch.cuda.is_available():
        out["cuda"] = [b64_tensor(s) for s in torch.cuda.get_rng_state_all()]
    return out


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the torch CPU (and, when present and available, CUDA) RNG states written by ``rng_state``."""
    torch.set_rng_state(_unb64(state["torch"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_unb64(s) for s in state["cuda"]])


# ---------------------------------------------------------------------------------------------
# atomic writes
# ---------------------------------------------------------------------------------------------


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same directory + ``os.replace``."""
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    _write_file(tmp, data)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _tensors(state: dict[str, Tensor]) -> dict[str, Tensor]:
    # clone: safetensors refuses tensors sharing storage (tied weights, views).
    return {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}


def optimizer_to_tensors(opt: torch.optim.Optimizer, param_names: list[str]) -> tuple[dict[str, Tensor], dict]:
    """Split ``opt.state_dict()`` into safetensors-storable tensors (``"<index>.<key>"``, e.g. AdamW
    ``exp_avg``) and JSON metadata (param groups, scalar state such as ``step``, and ``param_names``, the
    parameter name of each index, checked on resume)."""
    sd = opt.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, Any] = {}
    for idx, st in sd["state"].items():
        for key, value in st.items():
            if isinstance(value, Tensor):
                tensors[f"{idx}.{key}"] = value
            else:
                scalars[f"{idx}.{key}"] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars, "param_names": param_names}


def optimizer_from_tensors(opt: torch.optim.Optimizer, tensors: dict[str, Tensor], meta: dict[str, Any],
                           param_names: list[str], where: str) -> None:
    """Load optimizer state written by ``optimizer_to_tensors`` into ``opt``.

    Raises ``CheckpointError`` naming ``where`` when the checkpoint's parameter names differ from
    ``param_names`` (a different task set or frozen modules than the run that saved it)."""
    if meta["param_names"] != param_names and sorted(meta["param_names"]) == sorted(param_names):
        began = "muon" if any(g.get("muon") for g in meta["param_groups"]) else "adamw"
        raise CheckpointError(f"{where}: the same parameters in other optimizer groups than this run's: resume with "
                              f"the train.optimizer the run began with ({began})")
    if meta["param_names"] != param_names:
        missing = sorted(set(meta["param_names"]) ^ set(param_names))[:5]
        raise CheckpointError(f"{where}: optimizer parameters differ from this run's (e.g. {missing}); "
                              "resume with the same config (tasks, frozen modules)")
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    for key, value in meta["scalars"].items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in meta["param_groups"]]
    opt.load_state_dict({"state": state, "param_groups": groups})
    # Per-parameter state (AdamW's exp_avg, exp_avg_sq) takes its parameter's memory layout again: it was
    # created like the parameter (channels_last conv weights) and stored contiguous; the fused AdamW kernel
    # walks parameter, gradient and state as one flat array, so a layout mismatch would update wrong elements.
    for group in opt.param_groups:
        for p in group["params"]:
            for key, value in opt.state.get(p, {}).items():
                if isinstance(value, Tensor) and value.shape == p.shape and value.stride() != p.stride():
                    opt.state[p][key] = torch.empty_like(p, dtype=value.dtype).copy_(value)


def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def _free_name(directory: Path) -> Path:
    """``directory`` if unused, else ``<name>-1``, ``<name>-2``, ...: a re-save never touches the
    directory ``latest.json`` may point to until the pointer has moved off it."""
    if not directory.exists():
        return directory
    k = 1
    while (directory.parent / f"{directory.name}-{k}").exists():
        k += 1
    return directory.parent / f"{directory.name}-{k}"


_STEP_DIR = re.compile(r"^step_(\d+)(?:-(\d+))?$")


def _step_directories(parent: Path) -> list[Path]:
    """``step_*`` checkpoint directories under ``parent``, oldest first (by step, then re-save number)."""
    found = []
    for p in parent.glob("step_*"):
        m = _STEP_DIR.match(p.name)
        if m and p.is_dir():
            found.append(((int(m.group(1)), int(m.group(2) or 0)), p))
    return [p for _, p in sorted(found)]


def save_checkpoint(directory: str | Path, model: nn.Module, state: dict[str, Any],
                    optimizer_tensors: dict[str, Tensor] | None = None, keep: int | None = None) -> Path:
    """Write a checkpoint directory and point ``<parent>/latest.json`` at it, crash-safe at every instant.

    Order: write every file into a hidden temporary directory and fsync it; rename it to a name no
    pointer refers to (``directory``, or ``directory-1``... when re-saving a step); fsync the parent;
    atomically replace ``latest.json``; only then prune. A kill at any point leaves ``latest.json``
    naming a complete checkpoint (the previous or the new one).

    ``state`` is JSON-serialisable (config, step, ...); ``format`` and ``trunk_hash`` are added.
    ``keep``: prune the oldest ``step_*`` siblings beyond this many (the new one counts; older
    copies of the same step are always removed once the pointer has moved).
    Returns the directory written. Raises ``CheckpointError`` (naming the directory) when a write
    fails, e.g. ENOSPC: the temporary directory is removed and the previous checkpoint is untouched.
    """
    directory = Path(directory)
    parent = directory.parent
    parent.mkdir(parents=True, exist_ok=True)
    for leftover in parent.glob(".tmp-*"):  # from a crash mid-save
        _remove(leftover)
    model_state = _tensors(model.state_dict())
    files = {"model.safetensors": st_save(model_state)}
    if optimizer_tensors is not None:
        files["optimizer.safetensors"] = st_save(_tensors(optimizer_tensors))
    state = {"format": FORMAT, **state, "trunk_hash": trunk_hash(model_state),
             "files_sha256": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}}
    tmp = parent / f".tmp-{directory.name}-{os.getpid()}"
    target = _free_name(directory)
    try:
        tmp.mkdir()
        for name, data in files.items():
            _write_file(tmp / name, data)
        _write_file(tmp / "state.json", json.dumps(state, indent=1, sort_keys=True).encode())
        _fsync_dir(tmp)
        os.replace(tmp, target)
        _fsync_dir(parent)
        pointer = {"checkpoint": target.name, "step": state.get("step")}
        _atomic_write(parent / "latest.json", json.dumps(pointer).encode())
    except OSError as e:
        _remove(tmp)
        (parent / f".tmp-latest.json-{os.getpid()}").unlink(missing_ok=True)
        if target.exists() and _pointer_name(parent) != target.name:
            _remove(target)
        raise CheckpointWriteError(f"{directory}: could not write the checkpoint ({e.strerror or e}); the partial "
                              f"copy was removed and {_pointer_name(parent) or 'no earlier checkpoint'} "
                              "is unchanged") from None
    # The pointer has moved: older copies of this step and checkpoints beyond ``keep`` may go.
    for old in parent.glob(f"{directory.name}*"):
        if old != target and old.is_dir() and (old == directory or old.name.startswith(f"{directory.name}-")):
            _remove(old)
    if keep is not None:
        steps = [p for p in _step_directories(parent) if p != target]
        for old in steps[:max(0, len(steps) - (keep - 1))]:
            _remove(old)
    return target


def _pointer_name(parent: Path) -> str | None:
    try:
        return json.loads((parent / "latest.json").read_text())["checkpoint"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


# ---------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------


@dataclass
class Checkpoint:
    """A loaded checkpoint directory: ``state`` is ``state.json`` (config, step, RNG, balancer, ...),
    ``model`` the ``model.safetensors`` tensors by state_dict name, ``optimizer`` the
    ``optimizer.safetensors`` tensors (empty when loaded with ``optimizer=False`` or absent). ``name`` is the
    checkpoint as messages name it: ``zoo:NAME`` for a shipped model, as the user typed it (its ``path`` is a
    folder inside the installed package), else ``path``."""

    path: Path
    state: dict[str, Any]
    model: dict[str, Tensor]
    optimizer: dict[str, Tensor]
    name: str = ""

    def __post_init__(self) -> None:
        self.name = self.name or str(self.path)


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory, or a run/checkpoints directory whose ``latest.json`` names one, or ``zoo:NAME``:
    the zoo entry's directory in the package (``hydranet.model.zoo``; its files checked against the sha256 of
    its ``provenance.json``). Every command that takes a checkpoint resolves it here."""
    if str(path).startswith(ZOO_SCHEME):
        try:
            return verified_directory(str(path))
        except ZooError as e:
            raise CheckpointError(str(e)) from None
    path = Path(path)
    if (path / "state.json").is_file():
        return path
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint or run directory")
    for root in (path, path / "checkpoints"):
        pointer = root / "latest.json"
        if pointer.is_file():
            try:
                name = json.loads(pointer.read_text())["checkpoint"]
            except (ValueError, KeyError) as e:
                raise CheckpointError(f"{pointer}: corrupt pointer file ({e})") from None
            return root / name
    raise CheckpointError(f"{path}: not a checkpoint (no state.json) and no latest.json in it or its checkpoints/")


def read_state(path: str | Path) -> dict[str, Any]:
    """A checkpoint's ``state.json`` alone (``path`` as ``resolve_checkpoint`` takes it), without reading or
    verifying its tensors: for what only needs the config, step or task selection. Raises ``CheckpointError``
    naming the file when there is no checkpoint or the file is not a JSON object."""
    state_file = resolve_checkpoint(path) / "state.json"
    try:
        state = json.loads(state_file.read_text())
    except (OSError, ValueError, RecursionError) as e:  # RecursionError: JSON nested too deep
        raise CheckpointError(f"{state_file}: unreadable checkpoint state ({e})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{state_file}: unreadable checkpoint state (not a JSON object)")
    return state


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", optimizer: bool = True) -> Checkpoint:
    """Read a checkpoint (safetensors + JSON only); ``optimizer=False`` skips the optimizer moments.

    Every file is checked against the sha256 ``state.json`` records for it (``files_sha256``, written by
    ``save_checkpoint``; older checkpoints: the trunk hash), so a flipped byte or an edited header is refused
    wherever a checkpoint is loaded (resume, ``--from``, eval, export, merge, the feature cache).
    Raises ``CheckpointError`` naming the file."""
    name = str(path) if str(path).startswith(ZOO_SCHEME) else ""  # a zoo entry is named as typed
    path = resolve_checkpoint(path)
    state_file = path / "state.json"
    state = read_state(path)
    if state.get("format") != FORMAT:
        raise CheckpointError(f"{state_file}: unknown checkpoint format {state.get('format')!r}, expected {FORMAT!r}")

    hashes = state.get("files_sha256")

    def read(name: str, required: bool) -> dict[str, Tensor]:
        file = path / name
        if not file.is_file():
            if required:
                raise CheckpointError(f"{file}: missing")
            return {}
        try:
            data = file.read_bytes()
        except OSError as e:
            raise CheckpointError(f"{file}: unreadable ({e.strerror or e})") from None
        try:
            tensors = st_load(data)
        except Exception as e:  # safetensors raises its own error types for corrupt headers/data
            raise CheckpointError(f"{file}: corrupt safetensors file ({e})") from None
        if isinstance(hashes, dict) and name in hashes and hashlib.sha256(data).hexdigest() != hashes[name]:
            raise CheckpointError(f"{file}: sha256 differs from the one recorded in {state_file}: the file was "
                                  "altered or damaged after it was saved")
        return {k: v.to(map_location) for k, v in tensors.items()}

    model = read("model.safetensors", True)
    if not isinstance(hashes, dict) and state.get("trunk_hash") and state["trunk_hash"] != trunk_hash(model):
        # a checkpoint from before files_sha256: the trunk hash still covers the shared feature extractor
        raise CheckpointError(f"{path / 'model.safetensors'}: trunk hash differs from the one recorded in "
                              f"{state_file}: the weights were altered or damaged after they were saved")
    return Checkpoint(path, state, model, read("optimizer.safetensors", False) if optimizer else {}, name)


def load_latest_valid(ckpt_dir: str | Path, map_location: str | torch.device = "cpu", quarantine: bool = True
                      ) -> tuple[Checkpoint | None, str | None]:
    """The newest loadable checkpoint of a run's ``checkpoints/`` directory, for resuming.

    Tries the checkpoint ``latest.json`` names, then every ``step_*`` directory newest first. Returns
    ``(checkpoint, note)``: ``note`` is one line saying which checkpoint was unusable and which one is
    used instead (None when the pointer's own checkpoint loaded), and unusable checkpoints newer than
    the one used are renamed ``corrupt_<name>`` (when ``quarantine``: rank 0 only under DDP) so
    pruning can never keep them over a valid one.
    ``(None, None)`` when the directory holds no checkpoint at all. Raises ``CheckpointError``
    naming every file tried when checkpoints exist but none loads.
    """
    ckpt_dir = Path(ckpt_dir)
    pointer = _pointer_name(ckpt_dir)
    steps = list(reversed(_step_directories(ckpt_dir)))
    candidates = ([ckpt_dir / pointer] if pointer else []) + [p for p in steps if p.name != pointer]
    if not candidates and not (ckpt_dir / "latest.json").exists():
        return None, None
    problems: list[str] = []
    if (ckpt_dir / "latest.json").exists() and pointer is None:
        problems.append(f"{ckpt_dir / 'latest.json'}: corrupt pointer file")
    for path in candidates:
        if not path.is_dir():
            problems.append(f"{path}: missing (named by {ckpt_dir / 'latest.json'})")
            continue
        try:
            ckpt = load_checkpoint(path, map_location)
        except CheckpointError as e:
            problems.append(str(e))
            continue
        if not problems:
            return ckpt, None
        step = int(ckpt.state.get("step", -1))
        for bad in steps if quarantine else []:
            m = _STEP_DIR.match(bad.name)
            if bad != path and m and int(m.group(1)) >= step and bad.is_dir():
                os.replace(bad, bad.with_name(f"corrupt_{bad.name}"))
        note = (f"{problems[0]}; resuming from the newest valid checkpoint {path} (step {step})"
                + (f" ({len(problems) - 1} more unusable)" if len(problems) > 1 else ""))
        return ckpt, note
    raise CheckpointError("no valid checkpoint to resume from: " + "; ".join(problems))


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, Checkpoint]:
    """``(model, checkpoint)`` from a checkpoint, run directory or checkpoints directory.

    The model is built from the resolved ``ModelConfig`` stored in ``state.json`` (``model_config``),
    loaded strictly and returned in eval mode on ``device``. ``checkpoint`` is what was read
    (``path``, ``state``; the weights stay in the model and the optimizer moments are not loaded):
    callers take the training config (``state["config"]``), step or trunk hash from its ``state``
    instead of reading ``state.json`` again. Raises ``CheckpointError`` naming the file when the
    checkpoint is missing, corrupt or does not match its model config.
    """
    ckpt = load_checkpoint(path, map_location=device, optimizer=False)
    where = ckpt.path / "state.json"
    if "model_config" not in ckpt.state:
        raise CheckpointError(f"{where}: no model_config (not written by hydranet train?)")
    try:
        model_cfg = ModelConfig.model_validate(ckpt.state["model_config"])
    except ValidationError as e:
        raise CheckpointError(format_validation_error(e, f"{where}: model_config (not valid for this version)",
                                                      "model_config", sep="; ")) from None
    model = create_model(model_cfg).to(device)
    own = model.state_dict()
    for name, tensor in ckpt.model.items():
        if name in own and tensor.dtype != own[name].dtype:  # a header whose dtype was changed: never reinterpret
            raise CheckpointError(f"{ckpt.path / 'model.safetensors'}: tensor {name} is {tensor.dtype}, the model "
                                  f"needs {own[name].dtype}: the file was altered or is not this model's")
    try:
        model.load_state_dict(ckpt.model, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{ckpt.path / 'model.safetensors'}: does not match the model config ({e})") from None
    model.eval()
    return model, Checkpoint(ckpt.path, ckpt.state, {}, {}, ckpt.name)
