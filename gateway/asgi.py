"""The application factory for ASGI servers running several worker processes:
``uvicorn gateway.asgi:create --factory``. Each worker reads the same ``GATEWAY_*``
settings from its environment (``gateway serve --workers N`` sets them up)."""

from __future__ import annotations

from fastapi import FastAPI

from gateway.app import create_app
from gateway.config import load_settings
from gateway.telemetry import configure_logging


def create() -> FastAPI:
    settings = load_settings()
    configure_logging(settings.log_level)
    return create_app(settings)
