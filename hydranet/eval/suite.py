"""Evaluation suites as data: ``suites/*.yaml`` → ``Suite``.

A suite is a scenario set (synthetic-world settings), a seed range and a size, plus per-task
thresholds on named metrics and the regression tolerances the gate uses::

    name: night                       # defaults to the file name
    description: Night driving, clear and foggy
    world: {num_scenes: 50}           # WorldConfig fields shared by every scenario
    scenarios:                        # scenario name -> WorldConfig overrides
      night_clear: {lighting: night, fog: 0.0}
      night_fog: {lighting: night, fog: 0.02}
    seeds: [1000, 1002]               # world seeds [start, stop): one world per seed
    frames: 8                         # frames per (scenario, seed), spread evenly over the world
    sequence: 10                      # optional: each frame ends a streamed clip of 10 frames (video)
    tasks:
      drivable:
        thresholds: {miou: ">= 0.6"}  # pass/fail for `hydranet eval`
        tolerance: {miou: 0.02}       # largest regression `hydranet gate` accepts
      depth:
        thresholds: {abs_rel: "<= 0.3", delta1: ">= 0.5"}
    dead_cameras: [main]              # optional: these cameras are dead (black, camera_valid False)

Metric names are the keys of each task's ``Metric.compute()`` (see docs/eval.md). A task listed
without ``tolerance`` is gated on its headline metric with ``default_tolerance``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hydranet.config_errors import format_validation_error
from hydranet.limits import MAX_SUITE_SEEDS, check_suite_size
from hydranet.tasks import TASKS
from hydranet.world import WorldConfig
from hydranet.yaml_files import read_yaml_mapping

# Metrics where smaller is better (everything else: larger is better). Matched on the part before "/".
_LOWER_IS_BETTER = frozenset({"abs_rel", "rmse", "ate", "ase", "aoe", "ave", "flicker"})
_THRESHOLD = re.compile(r"^\s*(>=|<=)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


class SuiteError(ValueError):
    """A suite file that cannot be used; the message names the file and the field."""


def lower_is_better(metric: str) -> bool:
    """True for error metrics (``abs_rel``, ``rmse``, nuScenes ``ate``/``ase``/``aoe``/``ave``, ``flicker``);
    ``name/sub`` uses its prefix."""
    return metric.split("/")[0] in _LOWER_IS_BETTER


class Threshold(BaseModel):
    """An absolute pass condition on a metric, ``>= value`` or ``<= value``; NaN never passes (the runner's
    ``check_thresholds`` then marks the check skipped when the frames hold no ground truth for the metric,
    failed otherwise)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    op: str  # ">=" or "<="
    value: float

    @classmethod
    def parse(cls, text: Any) -> Threshold:
        """Parse ``'>= 0.5'``/``'<= 0.3'``; ``ValueError`` for anything else."""
        m = _THRESHOLD.match(str(text))
        if not m:
            raise ValueError(f"threshold must look like '>= 0.5' or '<= 0.3', got {text!r}")
        return cls(op=m.group(1), value=float(m.group(2)))

    def passes(self, x: float) -> bool:
        """Whether ``x`` meets the threshold (False for NaN: the metric could not be measured)."""
        if x != x:  # NaN never passes: the metric could not be measured
            return False
        return x >= self.value if self.op == ">=" else x <= self.value

    def __str__(self) -> str:
        return f"{self.op} {self.value:g}"


class SuiteTaskSpec(BaseModel):
    """Per-task suite settings: absolute ``thresholds`` per metric and the gate's allowed regression
    ``tolerance`` per metric (>= 0)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # a NaN tolerance would pass any regression
    thresholds: dict[str, Threshold] = Field(default_factory=dict)
    tolerance: dict[str, float] = Field(default_factory=dict)

    @field_validator("thresholds", mode="before")
    @classmethod
    def _parse(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            raise ValueError("thresholds must be a mapping metric -> '>= x' | '<= x'")
        return {k: t if isinstance(t, Threshold) else Threshold.parse(t) for k, t in v.items()}

    @field_validator("tolerance")
    @classmethod
    def _tol(cls, v: dict[str, float]) -> dict[str, float]:
        for k, t in v.items():
            if t < 0:
                raise ValueError(f"tolerance for '{k}' must be >= 0 (an allowed regression), got {t}")
        return v


def spread_evenly(count: int, length: int) -> list[int]:
    """Up to ``count`` distinct indices spread evenly over ``[0, length)``, ascending, first and last included
    (``length`` indices when ``count >= length``)."""
    return sorted({int(i) for i in np.linspace(0, length - 1, min(count, length)).round()})


class Suite(BaseModel):
    """An evaluation suite file: scenarios (``WorldConfig`` overrides) × a seed range [start, stop),
    ``frames`` frames (or clips of ``sequence`` frames), per-task thresholds/tolerances, dead cameras,
    and the gate's bootstrap resamples and confidence. Validated strictly at load (``ValidationError``
    naming the field)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    name: str
    description: str = ""
    world: dict[str, Any] = Field(default_factory=dict)
    scenarios: dict[str, dict[str, Any]] = Field(min_length=1)
    seeds: tuple[int, int]
    frames: int = Field(ge=1, le=100_000)
    # Video: each planned frame is the last of a clip of this many consecutive frames, streamed in order
    # through the model (its memory carries over) and all scored; adds occlusion persistence and flicker.
    sequence: int | None = Field(None, ge=2, le=1000)
    tasks: dict[str, SuiteTaskSpec] = Field(min_length=1)
    # Cameras (rig names) that are dead in every frame: their images are black and the model gets
    # camera_valid False for them (HydraNet.forward), e.g. to check BEV tasks survive a failed camera.
    dead_cameras: list[str] = Field(default_factory=list)
    default_tolerance: float = Field(0.02, ge=0.0)
    bootstrap: int = Field(200, ge=10, le=100_000, description="bootstrap resamples for the gate")
    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    path: str = ""  # the file it came from (set by load_suite)

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: tuple[int, int]) -> tuple[int, int]:
        if not v[0] < v[1]:
            raise ValueError(f"seeds must be [start, stop) with start < stop, got {list(v)}")
        if v[1] - v[0] > MAX_SUITE_SEEDS:
            raise ValueError(f"seeds {list(v)} span {v[1] - v[0]:,} worlds, the limit is {MAX_SUITE_SEEDS:,} "
                             "(seeds are [start, stop): split a larger sweep into several suites)")
        return v

    @model_validator(mode="after")
    def _worlds(self) -> Suite:
        check_suite_size(self.seeds[1] - self.seeds[0], self.frames * (self.sequence or 1), len(self.scenarios))
        for key in ("seed",):
            if key in self.world or any(key in s for s in self.scenarios.values()):
                raise ValueError("world/scenarios must not set 'seed': the suite's 'seeds' range does")
        for name in self.scenarios:
            try:
                self.world_config(name, self.seeds[0])
            except ValidationError as e:
                top = str(e.errors()[0]["loc"][0]) if e.errors()[0]["loc"] else ""
                prefix = f"scenarios.{name}" if top in self.scenarios[name] else "world"
                # the one formatter: field names as the user wrote them, no pydantic union internals
                raise ValueError(f"{format_validation_error(e, '', prefix, sep='; ')} (a WorldConfig field)") from None
        return self

    # ------------------------------------------------------------------------------------------
    def world_config(self, scenario: str, seed: int, **model_fields: Any) -> WorldConfig:
        """The scenario's ``WorldConfig`` for one seed; ``model_fields`` (the model's ``setup``) from the
        model fill in what the suite leaves unset."""
        fields = {**model_fields, **self.world, **self.scenarios[scenario], "seed": seed}
        return WorldConfig.model_validate(fields)

    def seeds_text(self) -> str:
        """The world seeds in words, every seed the suite runs and only those: ``seed 7``, ``seeds 7, 8``,
        ``seeds 7-16 (10)``. (``seeds: [start, stop)`` in the file is half-open: ``[9100, 9102]`` is 9100 and
        9101.)"""
        first, stop = self.seeds
        n = stop - first
        if n == 1:
            return f"seed {first}"
        if n <= 3:
            return "seeds " + ", ".join(str(s) for s in range(first, stop))
        return f"seeds {first}-{stop - 1} ({n})"

    def frame_indices(self, world_len: int) -> list[int]:
        """``frames`` sample indices spread evenly over ``[0, world_len)`` (different scenes)."""
        return spread_evenly(self.frames, world_len)


    def tolerances(self, task: str, headline: str) -> dict[str, float]:
        """The gate's allowed regression per metric of ``task``: its ``tolerance`` map, else
        ``default_tolerance`` on ``headline``."""
        spec = self.tasks[task]
        return dict(spec.tolerance) if spec.tolerance else {headline: self.default_tolerance}


def _pretty(e: ValidationError) -> str:

    return format_validation_error(e, "", sep="; ")


def load_suite(path: str | Path) -> Suite:
    """Read and validate one suite file; errors name the file and the field."""
    path = Path(path)
    data = read_yaml_mapping(path, SuiteError, "a suite as a YAML mapping")
    data.setdefault("name", path.stem)
    try:
        suite = Suite.model_validate({**data, "path": str(path)})
    except ValidationError as e:
        raise SuiteError(f"{path}: {_pretty(e)}") from None

    unknown = [t for t in suite.tasks if t not in TASKS]
    if unknown:
        raise SuiteError(f"{path}: tasks.{unknown[0]}: unknown task; registered tasks: {sorted(TASKS)}")
    return suite


# The suites shipped with hydranet: ``suites/`` of the source tree (an editable install), else
# ``hydranet/suites`` inside an installed package.
SHIPPED_SUITES = (Path(__file__).resolve().parents[2] / "suites", Path(__file__).resolve().parents[1] / "suites")


def resolve_suite_path(path: str | Path) -> Path:
    """``path`` if it exists (relative to the working directory); otherwise a relative path is looked
    up among the shipped suites, so ``--suite suites`` or ``--suite suites/night.yaml`` work from any
    directory. Returns ``path`` unchanged when neither exists (``load_suites`` then names it)."""
    path = Path(path)
    if path.exists() or path.is_absolute():
        return path
    parts = path.parts[1:] if path.parts and path.parts[0] == "suites" else path.parts
    for root in SHIPPED_SUITES:
        candidate = root.joinpath(*parts)
        if root.is_dir() and candidate.exists():
            return candidate
    return path


def select_tasks(suites: list[Suite], tasks: list[str]) -> list[Suite]:
    """The suites restricted to ``tasks`` (``eval --tasks``); ``SuiteError`` names tasks no suite has."""
    known = {t for s in suites for t in s.tasks}
    unknown = sorted(set(tasks) - known)
    if unknown:
        raise SuiteError(f"--tasks {unknown}: no suite evaluates them (suite tasks: {sorted(known)})")
    picked = [s.model_copy(update={"tasks": {t: v for t, v in s.tasks.items() if t in tasks}}) for s in suites]
    return [s for s in picked if s.tasks]


def load_suites(path: str | Path) -> list[Suite]:
    """A suite file, or every ``*.yaml``/``*.yml`` in a directory (sorted by name); a relative path
    not found in the working directory is looked up among the shipped suites."""
    path = resolve_suite_path(path)
    if path.is_dir():
        files = sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
        if not files:
            raise SuiteError(f"{path}: no *.yaml suite files in this directory")
        suites = [load_suite(f) for f in files]
        names = [s.name for s in suites]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise SuiteError(f"{path}: suite names must be unique, repeated: {sorted(dup)}")
        return suites
    if not path.exists():
        raise SuiteError(f"{path}: no such suite file or directory")
    return [load_suite(path)]
