"""One registry mechanism for every kind of plug-in: tasks, sources, trunks, triggers and balancers.

    TRIGGERS = Registry("trigger", package="hydranet.engine.triggers", error=TriggerError)

    class EntropyOptions(TriggerOptions):        # pydantic, extra="forbid": a typo is an error naming the field
        task: str = "drivable"

    @TRIGGERS.register("entropy", EntropyOptions)
    class Entropy(Trigger): ...

    trigger = TRIGGERS.create("entropy", {"task": "bev_semantic"}, where="--triggers")

- ``register(name, options)``: a decorator for a class or a factory; the entry records the name, the object and
  its options model (default: the object's ``Options`` attribute). A name registered twice with another object is
  a ``ValueError`` naming both modules.
- ``create(name, values, **context)``: validates ``values`` with the entry's options model, then calls
  ``object(options=<the validated model>, **context)``. ``validate`` alone checks a config at load time.
- **One loading rule**, the same for every kind: the first lookup imports every module of the registry's package
  (the built-ins: a file dropped there registers itself) and then every entry point of the group
  ``hydranet.<kind>s`` (plug-ins installed by other distributions, ``[project.entry-points."hydranet.tasks"]``).
  A plug-in that fails to import names itself.

Errors are the registry's ``error`` class (one per kind, default ``RegistryError``): an unknown name lists the
registered ones, bad options name ``where.<field>``.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from hydranet.config_errors import NumbersNotBools, format_validation_error

__all__ = ["Entry", "Options", "Registry", "RegistryError"]

T = TypeVar("T")


class RegistryError(KeyError, ValueError):
    """An unknown name or invalid options (a ``KeyError`` for lookups and a ``ValueError`` for configs alike);
    the message names the kind, the name and the field."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class Options(NumbersNotBools):
    """Base of every plug-in's options: unknown fields are errors that name themselves, and so is a true/false
    given for a number."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """A registered plug-in: its name, the object (class or factory) and its options model."""

    name: str
    obj: T
    options: type[BaseModel]


class Registry(Mapping[str, T]):
    """The plug-ins of one ``kind`` (``"task"``, ``"trunk"``, ...): built-ins are the modules of ``package``,
    plug-ins the entry points of ``group`` (default ``hydranet.<kind>s``); see the module docstring."""

    def __init__(self, kind: str, package: str, group: str | None = None, error: type[Exception] = RegistryError,
                 prefixes: bool = False):
        self.kind = kind
        self.package = package
        self.group = group or f"hydranet.{kind.split()[0]}s"
        self.error = error
        # ``prefixes``: a name ending in ":" is a family; "timm:resnet18" finds "timm:" with model_name="resnet18".
        self.prefixes = prefixes
        self._entries: dict[str, Entry[T]] = {}
        self._loaded = False

    # -- registering --------------------------------------------------------------------------------------------

    def register(self, name: str | None = None, options: type[BaseModel] | None = None) -> Callable[[T], T]:
        """Decorator registering a class or factory under ``name`` (default: its ``name`` attribute) with its
        options model (default: its ``Options`` attribute). Returns the object unchanged."""

        def deco(obj: T) -> T:
            key = name if name is not None else getattr(obj, "name", None)
            model = options if options is not None else getattr(obj, "Options", None)
            if not isinstance(key, str) or not key:
                raise ValueError(f"{self.kind} {obj!r}: register it with a name")
            if not (isinstance(model, type) and issubclass(model, BaseModel)):
                raise ValueError(f"{self.kind} '{key}': its options must be a pydantic model (got {model!r})")
            old = self._entries.get(key)
            if old is not None and old.obj is not obj:
                raise ValueError(f"{self.kind} '{key}' registered twice ({_module(old.obj)}, {_module(obj)})")
            self._entries[key] = Entry(key, obj, model)
            return obj

        return deco

    # -- the one loading rule -----------------------------------------------------------------------------------

    def load(self) -> None:
        """Import the package's modules and the group's entry points, once."""
        if self._loaded:
            return
        self._loaded = True
        package = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(getattr(package, "__path__", [])):  # a package: every module in it
            importlib.import_module(f"{self.package}.{info.name}")
        for ep in entry_points(group=self.group):
            try:
                ep.load()
            except Exception as e:  # a broken plug-in must name itself, not fail somewhere later
                raise ImportError(f"hydranet {self.kind} plug-in '{ep.name}' ({ep.value}) failed to import: {e}") from e

    # -- looking up ---------------------------------------------------------------------------------------------

    def names(self) -> list[str]:
        """The registered names, sorted (plug-ins loaded)."""
        self.load()
        return sorted(self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __contains__(self, name: object) -> bool:
        self.load()
        return isinstance(name, str) and (name in self._entries or self._family(name) is not None)

    def __getitem__(self, name: str) -> T:
        """The registered object (class or factory) of ``name``; ``RegistryError`` (a ``KeyError``) when unknown."""
        if name not in self:
            raise RegistryError(f"unknown {self.kind} '{name}'; registered {self.kind}s: {self.names()}")
        return self.entry(name).obj

    def pop(self, name: str, *default: Any) -> Any:
        """Unregister ``name`` (e.g. a test's plug-in); returns its object, or ``default`` when not registered."""
        entry = self._entries.pop(name, None)
        if entry is None:
            if default:
                return default[0]
            raise RegistryError(f"{self.kind} '{name}' is not registered")
        return entry.obj

    def _family(self, name: str) -> str | None:
        prefix, sep, _ = name.partition(":")
        return f"{prefix}:" if self.prefixes and sep and f"{prefix}:" in self._entries else None

    def entry(self, name: str) -> Entry[T]:
        """The entry of ``name``; the registry's ``error`` listing the registered names when unknown."""
        self.load()
        entry = self._entries.get(name)
        if entry is None and (family := self._family(name)) is not None:
            entry = self._entries[family]
        if entry is None:
            raise self.error(f"unknown {self.kind} '{name}'; registered {self.kind}s: {self.names()}")
        return entry

    def validate(self, name: str, values: Mapping[str, Any] | BaseModel | None = None,
                 where: str | None = None) -> BaseModel:
        """``values`` validated by ``name``'s options model; the registry's ``error`` names ``where.<field>`` for
        every problem (``where`` default: the kind)."""
        entry = self.entry(name)
        if isinstance(values, entry.options):  # already validated (a config section of this model)
            return values
        implied = {"model_name": name.partition(":")[2]} if entry.name != name else {}
        try:
            return entry.options.model_validate(implied | dict(values or {}))
        except ValidationError as e:
            problems = format_validation_error(e, "", prefix=self.kind if where is None else where, sep="; ")
            raise self.error(f"{self.kind} '{name}': bad options ({problems})") from None

    def create(self, name: str, values: Mapping[str, Any] | BaseModel | None = None, /, *, where: str | None = None,
               **context: Any) -> Any:
        """``object(options=<validated values>, **context)`` for registered ``name``."""
        options = self.validate(name, values, where)
        return self.entry(name).obj(options=options, **context)  # type: ignore[operator]


def _module(obj: Any) -> str:
    return getattr(obj, "__module__", repr(obj))
