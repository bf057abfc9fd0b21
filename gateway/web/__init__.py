"""Pages for people (sign-in, consent, logout) and the error page, in Chinese and English."""

from gateway.web.pages import WebContext, build_pages_router
from gateway.web.rendering import Renderer

__all__ = ["Renderer", "WebContext", "build_pages_router"]
