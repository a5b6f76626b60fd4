"""Provider plugins by type name: the built-ins, third-party entry points, settings and build.

    register(plugin)           add a ProviderPlugin under `plugin.name`
    get(type_name)             the plugin for an enrich.yaml `type`
    types()                    every registered type name
    parse_settings(entries)    validate `enrichment.providers`, every error with file:line
    build(settings, lookup)    resolve the secrets the settings name, then create the provider

Third-party plugins are packages that declare an entry point in the group
`guarded_profile_enrichment.providers` whose object is a ProviderPlugin (or a class that
makes one with no arguments)::

    [project.entry-points."guarded_profile_enrichment.providers"]
    socialscore = "socialscore_enrich:PLUGIN"

The entry point's name must equal the plugin's `name`. Entry points are loaded on first use;
one that fails to load is logged and recorded (`plugin_errors()`), names its entry point, and
does not stop the others; a config that uses its type gets that error back.

Secrets: a settings field named `<slot>_env` names an environment variable and `<slot>_block`
a Prefect Secret block (at any depth: `auth.secret_env` is slot `auth.secret`). `build` asks the
caller's `secrets_lookup` for `env:<NAME>` or `block:<name>` and hands the plugin
`{slot: value}`. Values never enter settings, messages or logs.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from pydantic import BaseModel, ValidationError

from enrichers.base import Provider, ProviderPlugin, ProviderSettings
from enrichers.gravatar import PLUGIN as GRAVATAR
from enrichers.http_json import PLUGIN as HTTP_JSON
from profiles.errors import ConfigError, KeyMaterialError
from profiles.yamlconf import dotted, locate

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP: Final = "guarded_profile_enrichment.providers"
"""Entry-point group third-party provider plugins register under."""
SETTINGS_LOC: Final[tuple[str, ...]] = ("enrichment", "providers")
"""Where provider entries live in enrich.yaml."""

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_SUFFIXES: Final = {"_env": "env", "_block": "block"}


class EntryPointLike(Protocol):
    """What discovery needs of an `importlib.metadata.EntryPoint`."""

    @property
    def name(self) -> str: ...

    @property
    def value(self) -> str: ...

    def load(self) -> Any: ...


@dataclass(frozen=True)
class SecretRef:
    """A secret a provider's settings name: where it is and which slot the plugin reads."""

    slot: str
    """Key in the mapping the plugin's `create` gets (`auth.secret`, `api_key`)."""
    source: str
    """`env` or `block`."""
    name: str
    """Environment variable or Secret block name."""

    @property
    def ref(self) -> str:
        """What `secrets_lookup` is asked for: `env:NAME` or `block:name`."""
        return f"{self.source}:{self.name}"


def secret_refs(settings: BaseModel) -> list[SecretRef]:
    """Every secret `settings` names (fields ending `_env` / `_block`, nested models too)."""
    found: list[SecretRef] = []

    def walk(model: BaseModel, prefix: str) -> None:
        for field_name in type(model).model_fields:
            value = getattr(model, field_name)
            if isinstance(value, BaseModel):
                walk(value, f"{prefix}{field_name}.")
                continue
            for suffix, source in _SUFFIXES.items():
                if field_name.endswith(suffix) and isinstance(value, str):
                    slot = prefix + field_name.removesuffix(suffix)
                    found.append(SecretRef(slot, source, value))

    walk(settings, "")
    return found


def environ_secrets(ref: str) -> str:
    """A `secrets_lookup` for `env:NAME` refs only (Secret blocks are the flow's to resolve)."""
    source, _, name = ref.partition(":")
    if source != "env":
        raise KeyError(f"{ref}: only env: secrets can be resolved here")
    return os.environ[name]


class Registry:
    """Provider plugins by type name; the module functions use one shared instance."""

    def __init__(
        self,
        plugins: Iterable[ProviderPlugin] = (),
        *,
        entry_points: Callable[[], Iterable[EntryPointLike]] | None = None,
    ) -> None:
        """`entry_points` lists third-party plugins (default: the installed distributions')."""
        self._plugins: dict[str, ProviderPlugin] = {}
        self._errors: dict[str, str] = {}
        self._entry_points = entry_points
        self._discovered = False
        self._discovery_started = False
        self._discovering = threading.RLock()
        for plugin in plugins:
            self.register(plugin)

    def register(self, plugin: ProviderPlugin) -> None:
        """Add `plugin` under its name; ValueError if it is malformed or the name is taken."""
        problem = _plugin_problem(plugin)
        if problem is not None:
            raise ValueError(problem)
        held = self._plugins.get(plugin.name)
        if held is not None and held is not plugin:
            raise ValueError(f"provider type {plugin.name!r} is already registered")
        self._plugins[plugin.name] = plugin

    def get(self, type_name: str) -> ProviderPlugin:
        """The plugin for `type_name`; KeyError naming the known types (or the load error)."""
        self.discover()
        plugin = self._plugins.get(type_name)
        if plugin is None:
            raise KeyError(self._unknown(type_name))
        return plugin

    def types(self) -> tuple[str, ...]:
        """Registered type names, sorted."""
        self.discover()
        return tuple(sorted(self._plugins))

    def plugin_errors(self) -> dict[str, str]:
        """Entry points that failed to load: entry point name -> what went wrong."""
        self.discover()
        return dict(self._errors)

    def discover(self) -> None:
        """Load third-party plugins from entry points (once, whichever thread asks first:
        providers' nights may run in parallel threads, and none may see half a registry)."""
        if self._discovered:
            return
        with self._discovering:
            if self._discovery_started:  # done meanwhile, or asked again while loading
                return
            self._discovery_started = True
            try:
                self._discover()
            finally:
                self._discovered = True

    def _discover(self) -> None:
        source = self._entry_points or _installed_entry_points
        try:
            entry_points = list(source())
        except Exception as exc:  # a broken distribution's metadata must not stop the run
            self._fail("(entry point scan)", f"listing entry points failed: {_what(exc)}")
            return
        for entry_point in entry_points:
            self._load(entry_point)

    def _load(self, entry_point: EntryPointLike) -> None:
        name = entry_point.name
        try:
            loaded = entry_point.load()
            plugin = loaded() if isinstance(loaded, type) else loaded
        except Exception as exc:  # any import-time error of a third-party package
            self._fail(name, f"loading {entry_point.value} failed: {_what(exc)}")
            return
        problem = _plugin_problem(plugin)
        if problem is not None:
            self._fail(name, f"{entry_point.value}: {problem}")
            return
        if plugin.name != name:
            self._fail(name, f"{entry_point.value} is plugin {plugin.name!r}, not {name!r}")
            return
        if name in self._plugins and self._plugins[name] is not plugin:
            self._fail(name, f"{entry_point.value}: type {name!r} is already registered")
            return
        self._plugins[name] = plugin

    def _fail(self, name: str, message: str) -> None:
        self._errors[name] = message
        logger.error("provider plugin entry point %r: %s", name, message)

    def _unknown(self, type_name: str) -> str:
        if type_name in self._errors:
            return f"provider type {type_name!r} failed to load: {self._errors[type_name]}"
        known = ", ".join(sorted(self._plugins)) or "none"
        return f"unknown provider type {type_name!r} (known types: {known})"

    def parse_settings(
        self, entries: list[dict[str, Any]], *, path: Path
    ) -> list[ProviderSettings]:
        """Validate each `enrichment.providers[i]` with its plugin's settings model.

        Raises ConfigError listing every problem as `file:line: enrichment.providers[i].field:
        message`: unknown types (with the known ones), invalid fields, duplicate names.
        """
        self.discover()
        problems: list[str] = []
        parsed: list[ProviderSettings] = []
        names: dict[str, int] = {}

        def report(loc: tuple[int | str, ...], message: str) -> None:
            full = (*SETTINGS_LOC, *loc)
            problems.append(f"{path}:{locate(path, full)}: {dotted(full)}: {message}")

        for index, entry in enumerate(entries):
            if not isinstance(entry, dict):
                report((index,), "must be a mapping with at least name and type")
                continue
            type_name = entry.get("type")
            if not isinstance(type_name, str):
                report((index, "type"), f"required; known types: {', '.join(self.types())}")
            elif type_name not in self._plugins:
                report((index, "type"), self._unknown(type_name))
            else:
                model = self._plugins[type_name].settings_model
                try:
                    settings = model.model_validate(entry)
                except ValidationError as exc:
                    for err in exc.errors(include_url=False, include_input=False):
                        report((index, *err["loc"]), err["msg"])
                else:
                    parsed.append(settings)
            name = entry.get("name")
            if isinstance(name, str):
                if name in names:
                    first = dotted((*SETTINGS_LOC, names[name]))
                    report((index, "name"), f"duplicate provider name {name!r} (also {first})")
                else:
                    names[name] = index
        if problems:
            raise ConfigError(str(path), problems)
        return parsed

    def build(self, settings: ProviderSettings, secrets_lookup: Callable[[str], str]) -> Provider:
        """The provider `settings` describe, with the secrets they name resolved.

        KeyMaterialError if a secret cannot be resolved (the message names the reference,
        never a value); ConfigError if the plugin returns something that is not a Provider.
        """
        plugin = self.get(settings.type)
        secrets: dict[str, str] = {}
        for ref in secret_refs(settings):
            try:
                secrets[ref.slot] = secrets_lookup(ref.ref)
            except Exception as exc:  # env, Prefect blocks, vaults: each fails its own way
                raise KeyMaterialError(
                    f"provider {settings.name}: secret {ref.ref} ({ref.slot}) cannot be "
                    f"resolved ({type(exc).__name__})"
                ) from None
        provider = plugin.create(settings, secrets)
        if not isinstance(provider, Provider):
            raise ConfigError(settings.name, [f"plugin {plugin.name!r} did not return a Provider"])
        return provider


def _installed_entry_points() -> Iterable[EntryPointLike]:
    return importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)


def _what(exc: BaseException) -> str:
    # The class and the message of an import error are what an operator needs to fix it; a
    # plugin's import-time message is its own code talking, not data.
    return f"{type(exc).__name__}: {exc}"


def _plugin_problem(plugin: Any) -> str | None:
    """Why `plugin` is not a usable ProviderPlugin, or None."""
    name = getattr(plugin, "name", None)
    if not isinstance(name, str) or not _NAME.match(name):
        return "plugin has no valid name (lower case, digits, underscores)"
    model = getattr(plugin, "settings_model", None)
    if not (isinstance(model, type) and issubclass(model, ProviderSettings)):
        return f"plugin {name!r}: settings_model is not a ProviderSettings subclass"
    if not callable(getattr(plugin, "create", None)):
        return f"plugin {name!r} has no create(settings, secrets)"
    return None


BUILTINS: Final[tuple[ProviderPlugin, ...]] = (HTTP_JSON, GRAVATAR)
"""Plugins that ship with the product."""

REGISTRY: Final = Registry(BUILTINS)
"""The shared registry the module functions use."""


def register(plugin: ProviderPlugin) -> None:
    """Add `plugin` to the shared registry (see `Registry.register`)."""
    REGISTRY.register(plugin)


def get(type_name: str) -> ProviderPlugin:
    """The shared registry's plugin for `type_name` (see `Registry.get`)."""
    return REGISTRY.get(type_name)


def types() -> tuple[str, ...]:
    """Type names in the shared registry."""
    return REGISTRY.types()


def plugin_errors() -> dict[str, str]:
    """Entry points of the shared registry that failed to load."""
    return REGISTRY.plugin_errors()


def parse_settings(entries: list[dict[str, Any]], *, path: Path) -> list[ProviderSettings]:
    """Validate enrich.yaml's `enrichment.providers` (see `Registry.parse_settings`)."""
    return REGISTRY.parse_settings(entries, path=path)


def build(settings: ProviderSettings, secrets_lookup: Callable[[str], str]) -> Provider:
    """Create the provider `settings` describe (see `Registry.build`)."""
    return REGISTRY.build(settings, secrets_lookup)


__all__ = [
    "BUILTINS",
    "ENTRY_POINT_GROUP",
    "REGISTRY",
    "Registry",
    "SecretRef",
    "build",
    "environ_secrets",
    "get",
    "parse_settings",
    "plugin_errors",
    "register",
    "secret_refs",
    "types",
]
