"""Settings, read from ``GATEWAY_*`` environment variables and an optional TOML file."""

from gateway.config.settings import Settings, load_settings

__all__ = ["Settings", "load_settings"]
