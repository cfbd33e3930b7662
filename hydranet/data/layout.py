"""Typed rig and BEV-grid records, as stored in a shard manifest and in a deployed model's manifest.

Both manifests used to keep ``Rig.to_dict()`` / ``BevGrid.to_dict()`` as free-form dicts, so a
manifest with a missing or mistyped key parsed fine and failed later with a ``KeyError`` deep inside
``Rig.from_dict``. These pydantic models check every field when the manifest is read, so the reader
can name the file and the field instead.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, field_validator, model_validator

from hydranet.geometry import BevGrid, CameraSpec, Rig

Number = StrictFloat | StrictInt  # JSON writes 2.0 as 2.0 but users write 2; never a string


def _finite(v: float, what: str) -> float:
    if not math.isfinite(v):
        raise ValueError(f"{what} must be finite, got {v}")
    return float(v)


class CameraRecord(BaseModel):
    """One camera of the rig: ``CameraSpec`` as stored (ego frame, metres and degrees)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    hfov_deg: Number = Field(gt=0, lt=180)
    position: tuple[Number, Number, Number]
    yaw_deg: Number
    pitch_deg: Number

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        if "/" in v or "\\" in v or "." in v or v.strip() != v:
            raise ValueError(f"camera name {v!r} may not contain '/', '\\\\', '.' or surrounding spaces")
        return v

    @model_validator(mode="after")
    def _finite_numbers(self) -> CameraRecord:
        for what, v in (("yaw_deg", self.yaw_deg), ("pitch_deg", self.pitch_deg),
                        *((f"position[{i}]", p) for i, p in enumerate(self.position))):
            _finite(v, what)
        return self

    def spec(self) -> CameraSpec:
        """The ``CameraSpec`` of this record (ego-frame position in metres, angles in degrees)."""
        return CameraSpec(self.name, float(self.hfov_deg), tuple(float(p) for p in self.position),
                          float(self.yaw_deg), float(self.pitch_deg))


class RigRecord(BaseModel):
    """``Rig.to_dict()`` typed: image size and the ordered cameras."""

    model_config = ConfigDict(extra="forbid")

    height: StrictInt = Field(ge=1)
    width: StrictInt = Field(ge=1)
    cameras: list[CameraRecord] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> RigRecord:
        names = [c.name for c in self.cameras]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"camera names must be unique, repeated: {dup}")
        return self

    def rig(self) -> Rig:
        """The ``Rig`` of this record: cameras in order at ``height`` × ``width`` pixels."""
        return Rig(tuple(c.spec() for c in self.cameras), self.height, self.width)


class GridRecord(BaseModel):
    """``BevGrid.to_dict()`` typed: ego-frame ranges in metres and the cell size."""

    model_config = ConfigDict(extra="forbid")

    x_range: tuple[Number, Number]
    y_range: tuple[Number, Number]
    cell: Number = Field(gt=0)

    @model_validator(mode="after")
    def _valid_grid(self) -> GridRecord:
        for what, v in (("x_range", self.x_range), ("y_range", self.y_range)):
            for x in v:
                _finite(x, what)
        _finite(self.cell, "cell")
        self.grid()  # BevGrid.__post_init__ checks ordering and that the spans are whole cells
        return self

    def grid(self) -> BevGrid:
        """The ``BevGrid`` of this record; ``ValueError`` if a span is inverted or not whole cells."""
        return BevGrid(tuple(float(x) for x in self.x_range), tuple(float(y) for y in self.y_range), float(self.cell))
