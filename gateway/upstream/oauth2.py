"""A plain OAuth 2.0 provider with a profile URL, and the GitHub preset.

Without ID tokens, who signed in is whatever the profile URL says, read with the access
token the code bought: the subject is one declared field of that profile (GitHub: the
numeric ``id``; ``login`` can change) together with the profile URL's origin, and the
catalogue fields come from a declared mapping.

GitHub's quirks: errors arrive as HTTP 200 with ``error`` (``bad_verification_code``,
``incorrect_client_credentials``, ``redirect_uri_mismatch``); the token response is
form-encoded unless ``Accept: application/json`` is sent (both are parsed); the e-mail
in ``/user`` may be null, and ``/user/emails`` (scope ``user:email``) gives the primary
verified one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

from pydantic import SecretStr

from gateway.upstream.base import UpstreamError, UpstreamIdentity, code_parameter, origin_of
from gateway.upstream.http import ProviderHttp
from gateway.upstream.listing import Listed, Listing
from gateway.upstream.profile import FieldMap, catalogue_profile, lookup


@dataclass(frozen=True, slots=True)
class OAuth2Endpoints:
    authorize_url: str
    token_url: str
    profile_url: str
    emails_url: str | None = None
    profile_headers: dict[str, str] = field(default_factory=dict)


GITHUB_ENDPOINTS = OAuth2Endpoints(
    authorize_url="https://github.com/login/oauth/authorize",
    token_url="https://github.com/login/oauth/access_token",  # noqa: S106 - a URL
    profile_url="https://api.github.com/user",
    emails_url="https://api.github.com/user/emails",
    profile_headers={"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"},
)
GITHUB_SCOPES = ["read:user", "user:email"]
GITHUB_FIELDS: FieldMap = {
    "nickname": ("name", "login"),
    "avatar": ("avatar_url",),
    "email": ("email",),
}
GENERIC_FIELDS: FieldMap = {
    "nickname": ("nickname", "name", "login", "username"),
    "avatar": ("picture", "avatar_url", "avatar"),
    "email": ("email",),
}
# Token errors that are the person's (a bad or used code): the shop hears access_denied.
# Anything else (our credentials, our redirect URI, the provider's state) is ours to fix.
_PERSON_ERRORS = frozenset({"invalid_grant", "bad_verification_code", "access_denied"})


class OAuth2Connector(Listed):
    def __init__(self, listing: Listing, *, endpoints: OAuth2Endpoints, client_id: str,
                 client_secret: SecretStr, scopes: list[str], scope_separator: str,
                 auth_method: str, pkce: bool, subject_field: str, fields: FieldMap,
                 http: ProviderHttp) -> None:
        super().__init__(listing, http.available)
        self._endpoints = endpoints
        self._client_id = client_id
        self._secret = client_secret
        self._scope = scope_separator.join(scopes)
        self._auth_method = auth_method
        self._pkce = pkce
        self._subject_field = subject_field
        self._fields = fields
        self._http = http
        origin = urlsplit(endpoints.profile_url)
        self._namespace_origin = f"{origin.scheme}://{origin.netloc}"

    async def authorization_origin(self) -> str:
        return origin_of(self._endpoints.authorize_url)

    async def authorization_url(self, *, state: str, nonce: str, code_challenge: str,
                                redirect_uri: str) -> str:
        params = {"response_type": "code", "client_id": self._client_id,
                  "redirect_uri": redirect_uri, "state": state}
        if self._scope:
            params["scope"] = self._scope
        if self._pkce:
            params |= {"code_challenge": code_challenge, "code_challenge_method": "S256"}
        url = self._endpoints.authorize_url
        return f"{url}{'&' if urlsplit(url).query else '?'}{urlencode(params)}"

    async def callback_code(self, params: Mapping[str, str]) -> str:
        return code_parameter(params)

    async def fetch_identity(self, *, code: str, code_verifier: str, redirect_uri: str,
                             nonce: str) -> UpstreamIdentity:
        access_token = await self._exchange(code, code_verifier, redirect_uri)
        profile = await self._get_json(self._endpoints.profile_url, access_token, "profile")
        if not isinstance(profile, dict):
            raise UpstreamError(f"{self.provider_id} profile: not a JSON object", retryable=True)
        subject = lookup(profile, self._subject_field)
        if isinstance(subject, bool) or not isinstance(subject, str | int) or not str(subject):
            raise UpstreamError(f"{self.provider_id} profile: no {self._subject_field!r}")
        if self._endpoints.emails_url and not profile.get("email"):
            email = await self._primary_email(self._endpoints.emails_url, access_token)
            profile = {**profile, "email": email}
        return UpstreamIdentity(
            self.provider_id, f"{self._namespace_origin}\x00{subject}",
            catalogue_profile(profile, self._fields), subject_kind=self._subject_field,
        )

    async def _exchange(self, code: str, code_verifier: str, redirect_uri: str) -> str:
        data = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
        if self._pkce:
            data["code_verifier"] = code_verifier
        auth = None
        if self._auth_method == "client_secret_basic":
            auth = (self._client_id, self._secret.get_secret_value())
        else:
            data |= {"client_id": self._client_id, "client_secret": self._secret.get_secret_value()}
        reply = await self._http.request("POST", self._endpoints.token_url, idempotent=False,
                                         what=f"{self.provider_id} token", data=data, auth=auth,
                                         headers={"Accept": "application/json"})
        body = reply.json_or_form()
        if "error" in body or reply.status != 200:
            error = str(body.get("error", f"HTTP {reply.status}"))[:64]
            raise UpstreamError(f"{self.provider_id} token: {error}",
                                retryable=error not in _PERSON_ERRORS)
        token = body.get("access_token")
        if not isinstance(token, str) or not token:
            raise UpstreamError(f"{self.provider_id} token: no access_token", retryable=True)
        token_type = str(body.get("token_type", "bearer")).lower()
        if token_type != "bearer":  # noqa: S105 - a protocol value
            raise UpstreamError(f"{self.provider_id} token: token_type is not bearer")
        return token

    async def _get_json(self, url: str, access_token: str, what: str) -> Any:
        headers = {"Accept": "application/json", **self._endpoints.profile_headers,
                   "Authorization": f"Bearer {access_token}"}
        reply = await self._http.request("GET", url, what=f"{self.provider_id} {what}",
                                         idempotent=True, headers=headers)
        if reply.status != 200:
            raise UpstreamError(f"{self.provider_id} {what}: HTTP {reply.status}")
        try:
            return json.loads(reply.text())
        except ValueError:
            raise UpstreamError(f"{self.provider_id} {what}: body is not JSON", retryable=True) from None

    async def _primary_email(self, url: str, access_token: str) -> str | None:
        """The primary, verified address from a GitHub-style e-mail list (None if none)."""
        emails = await self._get_json(url, access_token, "emails")
        if not isinstance(emails, list):
            return None
        for entry in emails:
            if isinstance(entry, dict) and entry.get("primary") is True and entry.get("verified") is True:
                email = entry.get("email")
                return email if isinstance(email, str) else None
        return None
