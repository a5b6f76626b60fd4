"""enrichers.registry: built-ins, third-party entry points, settings with file:line, secrets."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from enrichers import registry
from enrichers.base import Provider, ProviderSettings
from enrichers.gravatar import GravatarProvider, GravatarSettings
from enrichers.registry import ENTRY_POINT_GROUP, Registry, secret_refs
from profiles.errors import ConfigError, KeyMaterialError


class AcmeSettings(ProviderSettings):
    type: str = "acme"
    token_env: str | None = None


@dataclass
class AcmePlugin:
    name: ClassVar[str] = "acme"
    settings_model: ClassVar[type[ProviderSettings]] = AcmeSettings

    def create(self, settings: ProviderSettings, secrets: Mapping[str, str]) -> Provider:
        # a gravatar provider stands in for whatever a third party builds
        created = GravatarProvider(GravatarSettings(name=settings.name))
        CREATED.append(dict(secrets))
        return created


CREATED: list[dict[str, str]] = []


@dataclass
class FakeEntryPoint:
    name: str
    value: str
    loaded: Any

    def load(self) -> Any:
        if isinstance(self.loaded, BaseException):
            raise self.loaded
        return self.loaded


def test_builtins_are_registered() -> None:
    assert {"http_json", "gravatar"} <= set(registry.types())
    assert registry.get("gravatar").name == "gravatar"
    assert ENTRY_POINT_GROUP == "guarded_profile_enrichment.providers"
    assert ENTRY_POINT_GROUP in (registry.__doc__ or "")


def test_entry_points_load_third_party_plugins_and_record_broken_ones(
    caplog: pytest.LogCaptureFixture,
) -> None:
    points = [
        FakeEntryPoint("acme", "acme_enrich:PLUGIN", AcmePlugin()),
        FakeEntryPoint("byclass", "byclass:Plugin", AcmePlugin),  # a class: instantiated
        FakeEntryPoint("broken", "broken_enrich:PLUGIN", ImportError("No module named 'x'")),
        FakeEntryPoint("junk", "junk:PLUGIN", object()),
        FakeEntryPoint("gravatar", "evil:PLUGIN", registry.get("http_json")),
    ]
    reg = Registry(registry.BUILTINS, entry_points=lambda: points)
    with caplog.at_level(logging.ERROR, logger="enrichers.registry"):
        assert reg.types() == ("acme", "gravatar", "http_json")
    errors = reg.plugin_errors()
    assert set(errors) == {"byclass", "broken", "junk", "gravatar"}
    assert "is plugin 'acme', not 'byclass'" in errors["byclass"]
    assert "ImportError: No module named 'x'" in errors["broken"]
    assert "no valid name" in errors["junk"]
    assert "not 'gravatar'" in errors["gravatar"]  # a built-in cannot be replaced
    assert len(caplog.records) == 4
    with pytest.raises(KeyError, match="provider type 'broken' failed to load: loading broken"):
        reg.get("broken")
    with pytest.raises(KeyError, match=r"unknown provider type 'nope' \(known types: acme, "):
        reg.get("nope")


def test_a_failing_entry_point_scan_does_not_stop_the_built_ins() -> None:
    def scan() -> list[FakeEntryPoint]:
        raise RuntimeError("bad metadata")

    reg = Registry(registry.BUILTINS, entry_points=scan)
    assert reg.types() == ("gravatar", "http_json")
    assert "listing entry points failed: RuntimeError" in reg.plugin_errors()["(entry point scan)"]


def test_register_refuses_malformed_plugins_and_taken_names() -> None:
    reg = Registry(registry.BUILTINS, entry_points=list)
    reg.register(AcmePlugin())
    with pytest.raises(ValueError, match="already registered"):
        reg.register(type("Other", (AcmePlugin,), {})())
    with pytest.raises(ValueError, match="no valid name"):
        reg.register(type("Bad", (AcmePlugin,), {"name": "Bad Name"})())


def _config(tmp_path: Path, providers: list[Any]) -> tuple[Path, list[Any]]:
    path = tmp_path / "enrich.yaml"
    path.write_text(
        "sources: []\n" + yaml.safe_dump({"enrichment": {"providers": providers}}, sort_keys=False),
        encoding="utf-8",
    )
    loaded = yaml.safe_load(path.read_text(encoding="utf-8"))["enrichment"]["providers"]
    return path, loaded


def test_settings_errors_are_all_reported_with_file_and_line(tmp_path: Path) -> None:
    path, entries = _config(
        tmp_path,
        [
            {"name": "gr", "type": "gravatar", "confidence": 2},
            {"name": "gr", "type": "gravatar"},
            {"name": "x", "type": "socialscore"},
            {"name": "y"},
            "just text",
        ],
    )
    reg = Registry(registry.BUILTINS, entry_points=list)
    with pytest.raises(ConfigError) as caught:
        reg.parse_settings(entries, path=path)
    problems = caught.value.problems
    assert len(problems) == 5
    text = "\n".join(problems)
    assert f"{path}:6: enrichment.providers[0].confidence: Input should be less than 1" in text
    assert f"{path}:7: enrichment.providers[1].name: duplicate provider name 'gr'" in text
    assert "enrichment.providers[2].type: unknown provider type 'socialscore'" in text
    assert "enrichment.providers[3].type: required; known types: gravatar, http_json" in text
    assert "enrichment.providers[4]: must be a mapping" in text


def test_valid_settings_parse_to_each_plugins_model(tmp_path: Path) -> None:
    path, entries = _config(tmp_path, [{"name": "gr", "type": "gravatar", "enabled": False}])
    [settings] = registry.parse_settings(entries, path=path)
    assert type(settings).__name__ == "GravatarSettings"
    assert settings.enabled is False


def test_build_resolves_named_secrets_and_never_shows_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reg = Registry([*registry.BUILTINS, AcmePlugin()], entry_points=list)
    settings = AcmeSettings(name="acme_one", token_env="ACME_TOKEN")
    assert [r.ref for r in secret_refs(settings)] == ["env:ACME_TOKEN"]
    monkeypatch.setenv("ACME_TOKEN", "s3cr3t-value")
    CREATED.clear()
    provider = reg.build(settings, registry.environ_secrets)
    assert isinstance(provider, Provider)
    assert CREATED == [{"token": "s3cr3t-value"}]
    assert "s3cr3t" not in repr(settings)

    monkeypatch.delenv("ACME_TOKEN")
    with pytest.raises(KeyMaterialError) as caught:
        reg.build(settings, registry.environ_secrets)
    assert "secret env:ACME_TOKEN (token) cannot be resolved (KeyError)" in str(caught.value)
    with pytest.raises(KeyError, match="only env: secrets"):
        registry.environ_secrets("block:acme")


def test_the_readme_example_is_a_valid_provider(tmp_path: Path) -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Enrichment providers", 1)[1]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "enrich.yaml"
    path.write_text(example, encoding="utf-8")
    entries = yaml.safe_load(example)["enrichment"]["providers"]
    [settings] = registry.parse_settings(entries, path=path)
    assert settings.name == "socialscore"
    assert [r.ref for r in secret_refs(settings)] == ["env:SOCIALSCORE_API_KEY"]


def test_discovery_runs_once_and_no_thread_sees_half_of_it() -> None:
    started, release = threading.Event(), threading.Event()
    scans: list[int] = []

    def points() -> list[FakeEntryPoint]:
        scans.append(1)
        started.set()
        release.wait(5)  # a slow entry point scan, while another thread asks for a type
        return [FakeEntryPoint("acme", "acme_enrich:PLUGIN", AcmePlugin())]

    reg = Registry(registry.BUILTINS, entry_points=points)
    found: list[str] = []
    first = threading.Thread(target=lambda: found.append(reg.get("acme").name))
    first.start()
    assert started.wait(5)
    second = threading.Thread(target=lambda: found.append(reg.get("acme").name))
    second.start()
    release.set()
    first.join(5)
    second.join(5)
    assert found == ["acme", "acme"]
    assert scans == [1]
