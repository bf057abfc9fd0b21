"""Jinja2 rendering with autoescaping, the language switch and security headers."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

from gateway.telemetry import content_security_policy
from gateway.web.i18n import LANG_COOKIE, LANGUAGES, pick_language, translator

TEMPLATES = Path(__file__).parent / "templates"


class Renderer:
    def __init__(self) -> None:
        self._env = Environment(
            loader=FileSystemLoader(TEMPLATES),
            autoescape=select_autoescape(["html"]),
            auto_reload=False,
        )

    def language(self, request: Request) -> str:
        return pick_language(request.query_params.get("lang"), request.cookies.get(LANG_COOKIE),
                             request.headers.get("accept-language", ""))

    def page(self, request: Request, template: str, status_code: int = 200,
             form_action: Iterable[str] = (), **context: Any) -> HTMLResponse:
        """``form_action``: origins besides the gateway that this page's forms may end at."""
        lang = self.language(request)
        other = next(code for code in LANGUAGES if code != lang)
        query = [(k, v) for k, v in request.query_params.multi_items() if k != "lang"]
        html = self._env.get_template(template).render(
            lang=lang, other_lang=other, t=translator(lang),
            switch_query=urlencode([*query, ("lang", other)]), **context,
        )
        headers = {"Cache-Control": "no-store"}
        if form_action:
            headers["Content-Security-Policy"] = content_security_policy(form_action)
        response = HTMLResponse(html, status_code=status_code, headers=headers)
        if request.query_params.get("lang") in LANGUAGES:
            response.set_cookie(LANG_COOKIE, lang, secure=True, httponly=True, samesite="lax",
                                max_age=365 * 86400)
        return response
