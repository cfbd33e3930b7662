"""The trunk registry: a trunk is one file that registers a factory with ``@register_trunk``.

Like the task registry (``hydranet.tasks``), nothing else in the system names trunks: the model
config says ``trunk: {name: my_trunk, <its options>}`` and ``create_trunk`` builds it.

    from hydranet.model.registry import TrunkOptions, register_trunk

    class MyTrunkOptions(TrunkOptions):       # pydantic, extra="forbid": a typo is an error
        width: int = 32

    @register_trunk("my_trunk", MyTrunkOptions)
    def my_trunk(options: MyTrunkOptions) -> nn.Module:
        return MyTrunk(options.width)          # forward(x [B, 3, H, W]) -> 4 maps at strides 4, 8, 16, 32

The uniform feature interface every trunk keeps (timm's ``features_only``): ``forward`` returns a
list of four feature maps, finest first, and the module has ``out_channels`` (list of 4 ints) and
``strides`` (list of 4 ints, image pixels per feature cell; the FPN neck expects 4, 8, 16, 32).

Pretrained weights come from a LOCAL safetensors file only (``trunk: {pretrained: path}``): the
trunk's ``state_dict`` names, loaded strictly. Nothing is ever fetched from a hub.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from hydranet.registry import Options, Registry


class TrunkOptions(Options):
    """Base of every trunk's options: unknown fields are errors naming the field."""


TrunkFactory = Callable[..., nn.Module]

# Built-ins: hydranet.model.trunk (the RegNet presets and ``timm:``); plug-ins: the ``hydranet.trunks`` entry-point
# group. A name ending in ":" is a family: "timm:resnet18" is "timm:" with model_name="resnet18".
TRUNKS: Registry[TrunkFactory] = Registry("trunk", package="hydranet.model.trunk", prefixes=True)


def register_trunk(name: str, options: type[TrunkOptions] = TrunkOptions) -> Callable[[TrunkFactory], TrunkFactory]:
    """Decorator registering ``factory(options) -> nn.Module`` under ``name`` (``TRUNKS.register``). A name
    ending in ``:`` is a prefix family. Registering a name twice with another factory raises ``ValueError``."""
    return TRUNKS.register(name, options)


def create_trunk(name: str, pretrained: str | Path | None = None, **options: Any) -> nn.Module:
    """Build registered trunk ``name`` with ``options``; ``pretrained``: a local safetensors file of its
    weights. Raises ``RegistryError`` (unknown trunk, bad option: a ``KeyError`` and a ``ValueError``),
    ``ValueError`` (a URL, a trunk without the feature interface) or ``FileNotFoundError``/``ValueError`` naming
    the weights file."""
    trunk = TRUNKS.create(name, options)
    for attr in ("out_channels", "strides"):
        value = getattr(trunk, attr, None)
        if not isinstance(value, list | tuple) or len(value) != 4:
            raise ValueError(f"trunk '{name}' must expose {attr} as 4 ints (finest first), got {value!r}")
    if pretrained is not None:
        _load_pretrained(trunk, pretrained, name)
    return trunk


def _load_pretrained(trunk: nn.Module, path: str | Path, name: str = "trunk") -> None:
    """Load a local safetensors file into ``trunk`` (strict). URLs are refused: weights are never fetched."""
    text = str(path)
    if "://" in text:
        raise ValueError(f"trunk '{name}': pretrained must be a local file, not a URL ({text}); nothing is "
                         "downloaded at run time")
    file = Path(text)
    if not file.is_file():
        raise FileNotFoundError(f"{file}: pretrained weights for trunk '{name}' not found")
    try:
        state = load_file(str(file))
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{file}: not a readable safetensors file ({e})") from None
    try:
        trunk.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{file}: weights do not match trunk '{name}' ({e})") from None
