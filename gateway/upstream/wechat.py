"""WeChat: website QR login, official-account web authorization, and mini programs.

Protocol facts (../shared/providers.md, WeChat's own documentation):

- Parameters are ``appid``/``secret``, not ``client_id``/``client_secret``; the authorize
  URL's parameters must come in the documented order and end with ``#wechat_redirect``,
  or WeChat refuses the page.
- Errors come back as HTTP 200 with ``errcode``/``errmsg``; a body without ``errcode`` or
  with ``errcode`` 0 is a success. JSON has been served as ``text/plain``.
- ``openid`` is per app; ``unionid`` is per open-platform account and appears only for
  apps bound to one. People are keyed by the unionid when there is one (so the website,
  the official account and the mini program of one account share people), with the
  openid linked too, so a later sign-in yielding only the openid finds the same person.
- A mini program has no authorize page: ``wx.login()`` yields a code that the shop's
  back end hands to the gateway (gateway/web/miniprogram.py), exchanged here at
  ``jscode2session``. Its ``session_key`` is key material: it is dropped on arrival,
  never stored, logged or returned.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from pydantic import SecretStr

from gateway.upstream.base import UpstreamError, UpstreamIdentity, code_parameter, origin_of
from gateway.upstream.http import ProviderHttp, Reply
from gateway.upstream.listing import Listed, Listing
from gateway.upstream.profile import FieldMap, catalogue_profile, region_code

log = logging.getLogger(__name__)

WECHAT_FIELDS: FieldMap = {
    "nickname": ("nickname",),
    "avatar": ("headimgurl",),
    "gender": ("sex",),
    "region": ("region_code",),
    "city": ("city",),
}

# errcode families. Busy or rate-limited: try again later. Our app's credentials or
# permissions: the operator must fix them; the shop hears temporarily_unavailable. Any
# other code (invalid, used or expired code, blocked user, snapshot user): access_denied.
_BUSY = frozenset({-1, 45009, 45011})
_OURS = frozenset({40001, 40013, 40125, 40164, 41002, 41004, 48001, 50001})


def errcode_error(body: Mapping[str, Any], what: str) -> UpstreamError | None:
    """The error a WeChat body carries (HTTP 200 or not), or None for a success."""
    code = body.get("errcode", 0)
    try:
        number = int(code)
    except (TypeError, ValueError):
        return UpstreamError(f"{what}: errcode {str(code)[:16]!r} is not a number", retryable=True)
    if number == 0:
        return None
    # Only the number is kept: errmsg carries a changing request id ("rid: ...").
    return UpstreamError(f"{what}: errcode {number}", retryable=number in _BUSY or number in _OURS)


def fix_nickname(value: Any) -> Any:
    """Repair a nickname whose UTF-8 bytes were decoded as Latin-1 (seen from WeChat's API);
    anything else is returned as it came."""
    if not isinstance(value, str) or not value or max(map(ord, value)) > 0xFF or value.isascii():
        return value
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return value


def _identifier(body: Mapping[str, Any], name: str) -> str | None:
    value = body.get(name)
    if isinstance(value, str) and 0 < len(value) <= 128:
        return value
    return None


class _WeChatApi:
    """The calls shared by every WeChat product."""

    def __init__(self, provider_id: str, *, app_id: str, secret: SecretStr,
                 unionid_namespace: str, api_base: str, http: ProviderHttp) -> None:
        self._provider_id = provider_id
        self.app_id = app_id
        self._secret = secret
        self._union_namespace = f"wechat:unionid:{unionid_namespace}"
        self._api = api_base
        self._http = http

    async def call(self, path: str, params: dict[str, str], what: str, *,
                   idempotent: bool) -> dict[str, Any]:
        where = f"{self._provider_id} {what}"
        reply: Reply = await self._http.request("GET", f"{self._api}{path}", what=where,
                                                params=params, idempotent=idempotent)
        body = reply.json()  # whatever the Content-Type: text/plain happens
        error = errcode_error(body, where)
        if error is not None:
            raise error
        if reply.status != 200:
            raise UpstreamError(f"{where}: HTTP {reply.status}", retryable=True)
        return body

    def credentials(self) -> dict[str, str]:
        return {"appid": self.app_id, "secret": self._secret.get_secret_value()}

    def identity(self, body: Mapping[str, Any], profile: dict[str, Any] | None,
                 what: str) -> UpstreamIdentity:
        """People by unionid when there is one, with the openid linked as well."""
        openid = _identifier(body, "openid")
        if openid is None:
            raise UpstreamError(f"{self._provider_id} {what}: no openid")
        per_app = (self._provider_id, f"{self.app_id}\x00{openid}")
        unionid = _identifier(body, "unionid")
        has_profile = profile is not None
        if unionid is None:
            return UpstreamIdentity(self._provider_id, per_app[1], profile or {},
                                    subject_kind="openid", has_profile=has_profile)
        return UpstreamIdentity(self._provider_id, unionid, profile or {},
                                namespace=self._union_namespace, also_known_as=(per_app,),
                                subject_kind="unionid", has_profile=has_profile)


class WeChatConnector(Listed):
    """Website QR login (``snsapi_login``) or official-account pages (``snsapi_base`` /
    ``snsapi_userinfo``, inside the WeChat client only)."""

    def __init__(self, listing: Listing, *, product: str, app_id: str, secret: SecretStr,
                 scope: str, unionid_namespace: str, api_base: str, open_base: str,
                 http: ProviderHttp) -> None:
        super().__init__(listing, http.available)
        self._api = _WeChatApi(listing.provider_id, app_id=app_id, secret=secret,
                               unionid_namespace=unionid_namespace, api_base=api_base, http=http)
        self._website = product == "website"
        self._scope = "snsapi_login" if self._website else scope
        path = "/connect/qrconnect" if self._website else "/connect/oauth2/authorize"
        self._authorize = f"{open_base}{path}"

    def offered_to(self, user_agent: str) -> bool:
        # Official-account pages open only in WeChat's browser; a QR code shown inside
        # WeChat cannot be scanned by the phone showing it.
        inside_wechat = "micromessenger" in user_agent.lower()
        return inside_wechat != self._website

    async def authorization_origin(self) -> str:
        return origin_of(self._authorize)

    async def authorization_url(self, *, state: str, nonce: str, code_challenge: str,
                                redirect_uri: str) -> str:
        # The order is WeChat's (it matches the URL strictly); no PKCE, no nonce upstream.
        query = urlencode([("appid", self._api.app_id), ("redirect_uri", redirect_uri),
                           ("response_type", "code"), ("scope", self._scope), ("state", state)])
        return f"{self._authorize}?{query}#wechat_redirect"

    async def callback_code(self, params: Mapping[str, str]) -> str:
        return code_parameter(params)  # a refusal comes back with state and no code

    async def fetch_identity(self, *, code: str, code_verifier: str, redirect_uri: str,
                             nonce: str) -> UpstreamIdentity:
        token = await self._api.call("/sns/oauth2/access_token", {
            **self._api.credentials(), "code": code, "grant_type": "authorization_code",
        }, "token", idempotent=False)
        if str(token.get("is_snapshotuser", "0")) == "1":
            # A "snapshot page" visitor has not really signed in (official accounts).
            raise UpstreamError(f"{self.provider_id} token: snapshot-page user")
        access_token = token.get("access_token")
        openid = _identifier(token, "openid")
        if not isinstance(access_token, str) or not access_token or openid is None:
            raise UpstreamError(f"{self.provider_id} token: no access_token or openid", retryable=True)
        scopes = str(token.get("scope", self._scope)).split(",")
        if not any(s in ("snsapi_userinfo", "snsapi_login") for s in scopes):
            return self._api.identity(token, None, "token")  # snsapi_base: the openid only
        info = await self._api.call("/sns/userinfo", {"access_token": access_token, "openid": openid,
                                                "lang": "zh_CN"}, "userinfo", idempotent=True)
        if info.get("openid") != openid:
            raise UpstreamError(f"{self.provider_id} userinfo: openid differs from the token's")
        raw = {**info, "nickname": fix_nickname(info.get("nickname")),
               "region_code": region_code(info.get("country"), info.get("province"))}
        # The token's unionid counts when userinfo leaves it out.
        merged = {**token, **{k: v for k, v in info.items() if k in ("openid", "unionid")}}
        return self._api.identity(merged, catalogue_profile(raw, WECHAT_FIELDS), "userinfo")


class WeChatMiniProgram:
    """A mini program's ``wx.login`` code, exchanged at ``jscode2session``.

    Not a browser sign-in (there is no authorize page), so not a :class:`Connector`: the
    mini-program API in ``gateway/web/miniprogram.py`` uses it for the shops listed.
    """

    def __init__(self, provider_id: str, *, app_id: str, secret: SecretStr, shops: list[str],
                 unionid_namespace: str, api_base: str, http: ProviderHttp) -> None:
        self.provider_id = provider_id
        self.shops = frozenset(shops)
        self._api = _WeChatApi(provider_id, app_id=app_id, secret=secret,
                               unionid_namespace=unionid_namespace, api_base=api_base, http=http)

    async def exchange(self, js_code: str) -> UpstreamIdentity:
        """Who the code belongs to. Raises UpstreamError (40029 invalid code, 40163 used,
        40226 blocked high-risk user, 45011 rate limit, -1 busy, …)."""
        if not js_code or len(js_code) > 256:
            raise UpstreamError(f"{self.provider_id} jscode2session: code missing")
        body = await self._api.call("/sns/jscode2session", {
            **self._api.credentials(), "js_code": js_code, "grant_type": "authorization_code",
        }, "jscode2session", idempotent=False)
        # session_key is dropped here: only openid and unionid are read from the body.
        kept = {name: body.get(name) for name in ("openid", "unionid")}
        return self._api.identity(kept, None, "jscode2session")
