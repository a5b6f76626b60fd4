"""Gravatar REST API v3 provider type (`type: gravatar`): declared interests of public profiles."""

from enrichers.gravatar.config import GravatarSettings
from enrichers.gravatar.provider import PLUGIN, GravatarPlugin, GravatarProvider

__all__ = ["PLUGIN", "GravatarPlugin", "GravatarProvider", "GravatarSettings"]
