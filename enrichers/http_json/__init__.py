"""Generic JSON-over-HTTP provider type (`type: http_json`), described entirely in YAML."""

from enrichers.http_json.config import HttpJsonSettings
from enrichers.http_json.provider import PLUGIN, HttpJsonPlugin, HttpJsonProvider

__all__ = ["PLUGIN", "HttpJsonPlugin", "HttpJsonProvider", "HttpJsonSettings"]
