"""The authorization endpoint's decisions, framework-free.

``/authorize`` validates the request with authlib, then either answers the shop at once
(code or error, always with ``iss`` per RFC 9207), or parks the request and sends the person
to sign in or to the consent screen; those pages come back through :meth:`resume`.
Errors go back to the shop only when the client and its redirect URI are known and valid
(RFC 6749 §4.1.2.1); otherwise the person gets an error page and nobody is redirected.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from authlib.common.urls import add_params_to_uri
from authlib.oauth2.rfc6749 import AccessDeniedError, InvalidRequestError, OAuth2Error
from authlib.oidc.core.errors import ConsentRequiredError, LoginRequiredError

from gateway.consent import ConsentItem, ConsentRecord, consent_items, pending_items
from gateway.oidc.clients import Shop
from gateway.oidc.context import ProviderContext
from gateway.oidc.par import PushedRequests, is_pushed_request_uri
from gateway.oidc.par import required as par_required
from gateway.oidc.server import ProviderRequest, ProviderServer
from gateway.oidc.sessions import PendingRequest, Person
from gateway.oidc.tokens import StaleGrantError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Redirect:
    location: str


@dataclass(frozen=True, slots=True)
class ErrorPage:
    error: str
    description: str


Outcome = Redirect | ErrorPage
ACCOUNT_SIGN_IN = "account_sign_in"  # marks a parked sign-in for /account, not for a shop
ISSUE_ATTEMPTS = 3
# The authorization request parameters the flow reads, and the longest value accepted.
PARKED_PARAMETERS = {
    "response_type": 32, "client_id": 64, "redirect_uri": 2048, "scope": 1024, "state": 1024,
    "nonce": 1024, "code_challenge": 128, "code_challenge_method": 8, "prompt": 64,
    "max_age": 16, "ui_locales": 128, "lang": 16, "claims": 4096, "login_hint": 256,
    "id_token_hint": 4096, "acr_values": 256, "display": 16, "response_mode": 16,
    "dpop_jkt": 64,  # RFC 9449 §10
    ACCOUNT_SIGN_IN: 1,
}
_RESPONSE_TYPE = re.compile(r"[a-z_]{1,32}( [a-z_]{1,32}){0,3}")


def _first(params: list[tuple[str, str]], name: str) -> str | None:
    """The first value of ``name`` (as authlib reads a repeated parameter)."""
    return next((v for k, v in params if k == name), None)


@dataclass(frozen=True, slots=True)
class ConsentQuestion:
    shop: Shop
    items: list[ConsentItem]


class TemporarilyUnavailableError(OAuth2Error):  # type: ignore[misc]
    """RFC 6749 §4.1.2.1: the server (here: the upstream provider) cannot answer now."""

    error = "temporarily_unavailable"


class AuthorizationFlow:
    def __init__(self, ctx: ProviderContext, server: ProviderServer) -> None:
        self.ctx = ctx
        self.server = server

    def _request(self, params: list[tuple[str, str]]) -> ProviderRequest:
        # authlib quotes response_type in its error description and refuses to build an
        # error whose description holds characters RFC 6749 §4.1.2.1 forbids (a ValueError,
        # so a 500): anything but the simple token syntax becomes a value it reports cleanly.
        params = [(k, v if k != "response_type" or _RESPONSE_TYPE.fullmatch(v) else "invalid")
                  for k, v in params]
        return ProviderRequest("GET", self.ctx.endpoint("/authorize"), {}, params, [])

    def _error(self, error: OAuth2Error, state: str | None) -> Outcome:
        if error.redirect_uri:
            error.state = state
            _, _, headers = error()
            return Redirect(self._with_issuer(dict(headers)["Location"]))
        log.info("authorization request refused", extra={"error": error.error})
        return ErrorPage(error.error, error.get_error_description() or "")

    def _with_issuer(self, location: str) -> str:
        return str(add_params_to_uri(location, [("iss", self.ctx.issuer)]))

    def start(self, params: list[tuple[str, str]], person: Person | None, browser: str) -> Outcome:
        """Handle a fresh ``/authorize`` request."""
        resolved = self._front_channel(params)
        if not isinstance(resolved, list):
            return resolved
        return self._decide(resolved, person, browser, pending=None, request_id=None)

    def _front_channel(self, params: list[tuple[str, str]]) -> list[tuple[str, str]] | Outcome:
        """The request's parameters: the pushed ones for a request_uri from ``/par`` (taken
        once, only by the shop that pushed them; nothing else of the front channel counts),
        else the front channel's, refused for a shop that must push (gateway/oidc/par.py)."""
        uris = [v for k, v in params if k == "request_uri"]
        client_id = _first(params, "client_id")
        shop = self.ctx.shops.get(client_id)
        if len(uris) == 1 and is_pushed_request_uri(uris[0]):
            pushed = PushedRequests(self.ctx).take(shop.client_id, uris[0]) if shop else None
            if pushed is None:
                log.info("request_uri refused", extra={"client_id": client_id})
                return ErrorPage("invalid_request_uri", "This sign-in link has expired or was "
                                 "used already. Start again from the shop.")
            return list(pushed.items())
        if shop is None or not par_required(shop, self.ctx.settings) or uris:
            return params  # (another request_uri is refused as not supported)
        state = _first(params, "state")
        try:
            redirect_uri = self.validate(params)["redirect_uri"]  # registered: errors may go there
        except OAuth2Error as error:
            return self._error(error, state)
        return self._error(InvalidRequestError(
            "This client must push its authorization requests (RFC 9126).",
            redirect_uri=redirect_uri), state)

    def validate(self, params: list[tuple[str, str]]) -> dict[str, str]:
        """The checks of an authorization request that need no signed-in person (what
        ``/par`` checks before keeping a request); returns the parameters the flow keeps.
        ``prompt`` depends on the person's session: only its syntax is checked here, and
        the whole request is validated again when it arrives at ``/authorize``."""
        prompts = [v for k, v in params if k == "prompt"]
        _, grant = self._validated([(k, v) for k, v in params if k != "prompt"], None)
        words = prompts[0].split() if prompts else []
        if len(prompts) > 1 or ("none" in words and len(words) > 1):  # OIDC Core §3.1.2.1
            raise InvalidRequestError("Invalid 'prompt' parameter.", redirect_uri=grant.redirect_uri)
        return {k: v for k, v in params if k in PARKED_PARAMETERS and k != ACCOUNT_SIGN_IN}

    def _validated(self, params: list[tuple[str, str]],
                   person: Person | None) -> tuple[ProviderRequest, Any]:
        """authlib's validation of the request, plus the length caps of what is parked."""
        request = self._request(params)
        grant = self.server.get_consent_grant(request, end_user=person)
        too_long = sorted(k for k, v in request.payload.data.items()
                          if k in PARKED_PARAMETERS and len(v) > PARKED_PARAMETERS[k])
        if too_long:
            raise InvalidRequestError(f"Parameters too long: {', '.join(too_long)}.",
                                      redirect_uri=grant.redirect_uri)
        return request, grant

    def resume(self, request_id: str, person: Person | None, browser: str) -> Outcome:
        """Continue a parked request after sign-in or consent."""
        pending = self.ctx.pending.find(request_id, browser)
        if pending is None:
            return ErrorPage("invalid_request", "This sign-in has expired. Start again from the shop.")
        if pending.params.get(ACCOUNT_SIGN_IN) == "1":  # the person's own pages, no shop involved
            if person is None:
                return Redirect(f"/login?{urlencode({'request': request_id})}")
            self.ctx.pending.finish(request_id)
            return Redirect("/account")
        return self._decide(list(pending.params.items()), person, browser, pending, request_id)

    def start_account_sign_in(self, browser: str) -> Redirect:
        """Sign-in for the person's consent centre: the same providers, then /account."""
        request_id = self.ctx.pending.park({ACCOUNT_SIGN_IN: "1"}, browser)
        return Redirect(f"/login?{urlencode({'request': request_id})}")

    def deny(self, request_id: str, person: Person | None, browser: str,
             error_type: type[OAuth2Error] = AccessDeniedError) -> Outcome:
        """The person declined (or upstream failed): the shop gets ``error_type``."""
        pending = self.ctx.pending.find(request_id, browser)
        if pending is None:
            return ErrorPage("invalid_request", "This sign-in has expired. Start again from the shop.")
        self.ctx.pending.finish(request_id)
        request = self._request(list(pending.params.items()))
        try:
            grant = self.server.get_consent_grant(request, end_user=person)
        except OAuth2Error as error:
            return self._error(error, pending.params.get("state"))
        return self._error(error_type(redirect_uri=grant.redirect_uri), pending.params.get("state"))

    def _decide(self, params: list[tuple[str, str]], person: Person | None, browser: str,
                pending: PendingRequest | None, request_id: str | None) -> Outcome:
        state = _first(params, "state")
        try:
            request, grant = self._validated(params, person)
        except OAuth2Error as error:
            return self._error(error, state)
        # Only what the flow uses is parked in Redis, so junk parameters cannot make every
        # unauthenticated request park tens of kilobytes for ten minutes (issue 14).
        params = [(k, v) for k, v in params if k in PARKED_PARAMETERS]
        data = request.payload.data
        prompts = set(str(data.get("prompt", "")).split())
        # Sign-ins and consent decisions made after the request was parked satisfy
        # prompt=login / prompt=consent; a request that was never parked has had none.
        parked_at = pending.created if pending else float("inf")

        if person is None or self._needs_login(data, prompts, person, parked_at):
            if "none" in prompts:
                return self._error(LoginRequiredError(redirect_uri=grant.redirect_uri), state)
            request_id = request_id or self.ctx.pending.park(dict(params), browser)
            return Redirect(f"/login?{urlencode({'request': request_id})}")

        for _ in range(ISSUE_ATTEMPTS):
            consent = self.ctx.consents.state(person.id, grant.client.client_id)
            record = consent.record
            asked = self._asked_items(grant.client, set(grant.requested_fields), record, prompts,
                                      parked_at)
            fresh = record is not None and record.decided_at >= parked_at
            # No decision yet, or everything withdrawn: the shop gets nothing, not even the
            # pseudonym, until the person has seen the consent screen (again).
            undecided = record is None or bool(record.withdrawn_at)
            if asked or (undecided and not fresh):
                if "none" in prompts:
                    return self._error(ConsentRequiredError(redirect_uri=grant.redirect_uri), state)
                request_id = request_id or self.ctx.pending.park(dict(params), browser)
                return Redirect(f"/consent?{urlencode({'request': request_id})}")
            # The code is stored only under the generation this decision read; a withdrawal
            # in between makes it stale, and the decision is taken again.
            grant.consent_generation = consent.generation
            try:
                status, body, headers = self.server.create_authorization_response(
                    request, grant_user=person, grant=grant
                )
            except StaleGrantError:
                log.info("consent changed during authorization; deciding again")
                continue
            if request_id:
                self.ctx.pending.finish(request_id)
            location = dict(headers).get("Location")
            if status != 302 or not location:
                return ErrorPage(str(dict(body).get("error", "server_error")), "")
            return Redirect(self._with_issuer(location))
        return ErrorPage("temporarily_unavailable", "The consent changed meanwhile. Please try again.")

    def _asked_items(self, shop: Shop, requested: set[str], record: ConsentRecord | None,
                     prompts: set[str], parked_at: float) -> list[ConsentItem]:
        """What the consent screen must ask: everything for ``prompt=consent`` (once per
        request), otherwise only what is new, widened or expired."""
        items = consent_items(shop.config.policy, self.ctx.catalogue, requested)
        fresh = record is not None and record.decided_at >= parked_at
        withdrawn = record is not None and bool(record.withdrawn_at)
        if ("consent" in prompts or withdrawn) and not fresh:
            return items
        return pending_items(items, record, time.time())

    def consent_question(self, request_id: str, person: Person, browser: str) -> ConsentQuestion | None:
        """The consent screen's content for a parked request, or None if it is gone."""
        pending = self.ctx.pending.find(request_id, browser)
        if pending is None:
            return None
        request = self._request(list(pending.params.items()))
        try:
            grant = self.server.get_consent_grant(request, end_user=person)
        except OAuth2Error:
            return None
        shop: Shop = grant.client
        record = self.ctx.consents.find(person.id, shop.client_id)
        prompts = set(pending.params.get("prompt", "").split())
        items = self._asked_items(shop, set(grant.requested_fields), record, prompts, pending.created)
        return ConsentQuestion(shop, items)

    @staticmethod
    def _needs_login(data: dict[str, str], prompts: set[str], person: Person, parked_at: float) -> bool:
        signed_in_since_parked = person.signed_in_at >= parked_at
        if "login" in prompts and not signed_in_since_parked:
            return True
        max_age = data.get("max_age")
        if max_age is not None:
            if not max_age.isdigit():
                return True
            return time.time() - person.auth_time > int(max_age) and not signed_in_since_parked
        return False
