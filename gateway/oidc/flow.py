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
from urllib.parse import urlencode

from authlib.common.urls import add_params_to_uri
from authlib.oauth2.rfc6749 import AccessDeniedError, InvalidRequestError, OAuth2Error
from authlib.oidc.core.errors import ConsentRequiredError, LoginRequiredError

from gateway.consent import ConsentItem, ConsentRecord, consent_items, pending_items
from gateway.oidc.clients import Shop
from gateway.oidc.context import ProviderContext
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
        return self._decide(params, person, browser, pending=None, request_id=None)

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
        request = self._request(params)
        state = request.payload.state
        try:
            grant = self.server.get_consent_grant(request, end_user=person)
            too_long = sorted(k for k, v in request.payload.data.items()
                              if k in PARKED_PARAMETERS and len(v) > PARKED_PARAMETERS[k])
            if too_long:
                raise InvalidRequestError(f"Parameters too long: {', '.join(too_long)}.",
                                          redirect_uri=grant.redirect_uri)
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
