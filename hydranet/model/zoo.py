"""The model zoo: trained weights shipped inside the package, loaded by name (timm's pretrained registry).

A zoo entry is a registered name (``PRETRAINED``) whose files sit in the installed package, in
``hydranet/model/pretrained/<name>/`` (package data: nothing is ever downloaded)::

    model.safetensors   the weights, by state_dict name, as ``hydranet train`` saved them
    state.json          that checkpoint's state (training config, ``model_config``, step, ``files_sha256``)
    provenance.json     how the weights were made, written by ``tools/zoo_install.py``: the config file that
                        reproduces them, steps, training data, the sha256 of the two files above, the figures
                        JSON (``docs/results/<figures>.json``) and the floors suites ``make test`` checks

Two ways in, one set of files:

- ``create_model("tiny", pretrained=True)`` (a preset: its default entry) or ``create_model("tiny-world",
  pretrained=True)`` (an entry) builds the entry's network from ``state.json``'s ``model_config`` and loads
  the weights (``hydranet.model.builder``);
- ``zoo:tiny-world`` wherever a command takes a checkpoint or run: ``hydranet.checkpoint.resolve_checkpoint``
  maps it to the entry's directory, and the checkpoint loader's own sha256 checks apply.

Both go through ``verified_directory``: the files must exist and match the sha256 ``provenance.json``
recorded for them, else ``ZooError`` names the file.

The entries are a kind of plug-in of the one registry mechanism (``hydranet.registry``): ``PRETRAINED`` is a
``Registry`` whose built-ins are registered below and whose plug-ins are the entry points of the group
``hydranet.zoo`` (a distribution shipping its own weights registers a ``Pretrained`` with its own ``root``).
Register another entry with ``register_pretrained`` and install its files with ``python tools/zoo_install.py
install RUN --name NAME`` (see README, "Reference model").
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load as st_load
from torch import Tensor

from hydranet.registry import Options, Registry

PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"
WEIGHTS_FILE = "model.safetensors"
STATE_FILE = "state.json"
PROVENANCE_FILE = "provenance.json"
ZOO_SCHEME = "zoo:"  # the prefix naming an entry where a checkpoint path is expected: ``zoo:tiny-world``


class ZooError(ValueError):
    """An unknown zoo name, a preset without weights, or an entry whose files are missing or damaged; the
    message names the entry, the file and the names that do have weights."""


@dataclass(frozen=True)
class Pretrained:
    """A zoo entry: ``name`` (``zoo:<name>``), the model ``preset`` its network extends (``create_model(preset,
    pretrained=True)`` returns the first entry registered for it), what it is in one line, and ``root``: the
    folder holding ``<name>/`` (default: this package's ``pretrained/``; a plug-in distribution's own package
    data otherwise)."""

    name: str
    preset: str
    description: str
    root: Path | None = None

    @property
    def directory(self) -> Path:
        """The entry's files: ``<root>/<name>/`` (``hydranet/model/pretrained/<name>/`` for the built-ins)."""
        return (self.root if self.root is not None else PRETRAINED_DIR) / self.name

    def provenance(self) -> dict[str, Any]:
        """``provenance.json`` (see the module docstring); ``ZooError`` when missing or unreadable."""
        file = self.directory / PROVENANCE_FILE
        try:
            data = json.loads(file.read_text())
        except FileNotFoundError:
            raise ZooError(f"zoo:{self.name}: {file} is missing: this installation has no weights for it "
                           f"(install them: python tools/zoo_install.py install RUN --name {self.name})") from None
        except (OSError, ValueError) as e:
            raise ZooError(f"zoo:{self.name}: {file}: unreadable ({e})") from None
        if not isinstance(data, dict) or not isinstance(data.get("sha256"), dict):
            raise ZooError(f"zoo:{self.name}: {file}: no 'sha256' mapping (not written by tools/zoo_install.py)")
        return data


# A kind of plug-in like tasks and trunks (hydranet.registry's one loading rule): the built-ins are this module's
# register_pretrained calls, plug-ins the ``hydranet.zoo`` entry points. An entry takes no options.
PRETRAINED: Registry[Pretrained] = Registry("pretrained model", package=__name__, group="hydranet.zoo",
                                            error=ZooError)


def register_pretrained(entry: Pretrained) -> Pretrained:
    """Register ``entry`` in ``PRETRAINED`` (``Registry.register``); ``ValueError`` for a name registered twice
    with another entry, or one with a colon or slash (it is a directory name and follows ``zoo:``)."""
    if not entry.name or any(c in entry.name for c in ":/\\"):
        raise ValueError(f"zoo entry name {entry.name!r} must be non-empty without ':', '/' or '\\'")
    return PRETRAINED.register(entry.name, Options)(entry)


register_pretrained(Pretrained(
    "tiny-world", "tiny",
    "the reference model: the demo's network (configs/demo.yaml's setup and heads: tiny preset, 8 cameras at 96x192, "
    "64 m BEV grid at 1 m, 7 tasks) trained longer on more of the synthetic world (configs/reference.yaml)"))


def _available() -> list[str]:
    """Registered names whose files are present in this installation (sorted)."""
    return sorted(n for n, e in PRETRAINED.items() if (e.directory / PROVENANCE_FILE).is_file())


def _names_text() -> str:
    have = _available()
    return (f"names with weights: {', '.join(have)}" if have else
            f"this installation has weights for none of the registered names ({', '.join(sorted(PRETRAINED))})")


def find_pretrained(name: str) -> Pretrained:
    """The entry ``name`` names: a zoo name (``tiny-world``, with or without ``zoo:``) or a model preset
    (``tiny``: the first entry registered for it). ``ZooError`` lists the names with weights otherwise."""
    typed, name = name, name.removeprefix(ZOO_SCHEME)
    if name in PRETRAINED:
        return PRETRAINED[name]
    for entry in PRETRAINED.values():
        if entry.preset == name:
            return entry
    raise ZooError(f"no pretrained weights for '{typed}'; {_names_text()} (hydranet zoo lists them)")


def _sha256(file: Path) -> str:
    h = hashlib.sha256()
    with open(file, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verified_directory(name: str) -> Path:
    """The entry's directory once ``model.safetensors`` and ``state.json`` exist and match the sha256 its
    ``provenance.json`` records. ``ZooError`` names the missing or altered file."""
    entry = find_pretrained(name)
    recorded = entry.provenance()["sha256"]
    for file_name in (WEIGHTS_FILE, STATE_FILE):
        file = entry.directory / file_name
        if not file.is_file():
            raise ZooError(f"zoo:{entry.name}: {file} is missing (the installation is incomplete: reinstall "
                           "hydranet, or rerun tools/zoo_install.py)")
        if file_name not in recorded:
            raise ZooError(f"zoo:{entry.name}: {entry.directory / PROVENANCE_FILE} records no sha256 for {file_name}")
        if _sha256(file) != recorded[file_name]:
            raise ZooError(f"zoo:{entry.name}: {file}: sha256 differs from the one in {PROVENANCE_FILE} "
                           f"({recorded[file_name][:12]}...): the file was altered or damaged")
    return entry.directory


def pretrained_weights(name: str) -> tuple[dict[str, Any], dict[str, Tensor], Path]:
    """``(model_config, weights, directory)`` of an entry (zoo or preset name), verified
    (``verified_directory``): ``model_config`` is ``state.json``'s ``model_config`` (a ``ModelConfig`` dict),
    ``weights`` the CPU tensors by state_dict name. ``ZooError`` names the file when something is wrong."""
    directory = verified_directory(name)
    state_file, weights_file = directory / STATE_FILE, directory / WEIGHTS_FILE
    try:
        state = json.loads(state_file.read_text())
        model_config = state["model_config"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ZooError(f"{state_file}: no readable model_config ({e})") from None
    try:
        weights = st_load(weights_file.read_bytes())
    except (SafetensorError, OSError) as e:
        raise ZooError(f"{weights_file}: corrupt safetensors file ({e})") from None
    return model_config, weights, directory
