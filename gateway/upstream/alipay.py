"""Alipay web authorization through the signed open-API gateway.

Requests (``alipay.system.oauth.token``, then ``alipay.user.info.share``) are form posts to
the gateway, signed RSA2: every parameter but ``sign`` with a non-empty value, sorted by
key, joined ``k=v`` with ``&`` without URL-encoding, SHA256withRSA (PKCS#1 v1.5) with the
app's private key, base64.

Answers are trusted only once Alipay's signature over the *raw text* of the
``*_response`` member verifies with Alipay's public key: the member's exact bytes are
cut out of the body (not re-serialised, which could reorder or re-escape them). Errors
arrive as HTTP 200: a top-level ``error_response``, or ``code`` other than ``10000``
with a ``sub_code`` (``isv.code-invalid``, ``aop.invalid-auth-token``, …).

Identifiers: ``user_id`` (``2088…``) is global, ``union_id`` per developer account,
``open_id`` per app (new apps get only this one). People are keyed by the strongest
given, the others linked as well. Only public-key mode is supported (not certificate
mode, whose responses carry ``alipay_cert_sn``).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlencode

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

from gateway.upstream.base import UpstreamError, UpstreamIdentity, code_parameter, origin_of
from gateway.upstream.http import ProviderHttp
from gateway.upstream.listing import Listed, Listing
from gateway.upstream.profile import FieldMap, catalogue_profile, region_code

GATEWAY_URL = "https://openapi.alipay.com/gateway.do"
SANDBOX_GATEWAY_URL = "https://openapi-sandbox.dl.alipaydev.com/gateway.do"
AUTHORIZE_URL = "https://openauth.alipay.com/oauth2/publicAppAuthorize.htm"
SANDBOX_AUTHORIZE_URL = "https://openauth-sandbox.dl.alipaydev.com/oauth2/publicAppAuthorize.htm"
_CHINA_TIME = timezone(timedelta(hours=8))  # Alipay's timestamps are Beijing time

ALIPAY_FIELDS: FieldMap = {
    "nickname": ("nick_name",),
    "avatar": ("avatar",),
    "gender": ("gender",),
    "region": ("region_code",),
    "city": ("city",),
    "phone": ("mobile",),
    "email": ("email",),
    "birthdate": ("person_birthday",),
    "real_name": ("user_name",),
    "id_number": ("id_card_number",),  # cert_no, kept only when cert_type is 0 (ID card)
}
# Errors that are the person's (a bad, used or expired code or token): access_denied.
_PERSON_ERRORS = frozenset({"isv.code-invalid", "isv.auth-code-invalid", "aop.invalid-auth-token",
                            "isv.refresh-token-invalid", "isv.refresh-token-time-out"})


class AlipayKeyError(ValueError):
    """A configured key that is not an RSA key of the expected kind."""


def load_private_key(text: str) -> RSAPrivateKey:
    """The app's private key: PEM (PKCS#8 or PKCS#1), or the bare base64 Alipay's tool prints."""
    try:
        if "-----BEGIN" in text:
            key = serialization.load_pem_private_key(text.encode(), password=None)
        else:
            key = serialization.load_der_private_key(base64.b64decode("".join(text.split())),
                                                     password=None)
    except (ValueError, TypeError, binascii.Error) as error:
        raise AlipayKeyError(f"not a private key ({type(error).__name__})") from None
    if not isinstance(key, RSAPrivateKey):
        raise AlipayKeyError("not an RSA private key")
    return key


def load_public_key(text: str) -> RSAPublicKey:
    """Alipay's public key: PEM, or bare base64 of the DER SubjectPublicKeyInfo."""
    try:
        if "-----BEGIN" in text:
            key = serialization.load_pem_public_key(text.encode())
        else:
            key = serialization.load_der_public_key(base64.b64decode("".join(text.split())))
    except (ValueError, TypeError, binascii.Error) as error:
        raise AlipayKeyError(f"not a public key ({type(error).__name__})") from None
    if not isinstance(key, RSAPublicKey):
        raise AlipayKeyError("not an RSA public key")
    return key


def sign_content(params: Mapping[str, str]) -> str:
    """The string Alipay signs: non-empty parameters but ``sign``, sorted, ``k=v&…``."""
    return "&".join(f"{k}={v}" for k, v in sorted(params.items()) if k != "sign" and v)


def rsa2_sign(key: RSAPrivateKey, content: str) -> str:
    return base64.b64encode(key.sign(content.encode(), padding.PKCS1v15(), hashes.SHA256())).decode()


def rsa2_verify(key: RSAPublicKey, content: str, signature: str) -> bool:
    try:
        key.verify(base64.b64decode(signature, validate=True), content.encode(),
                   padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def top_level_members(text: str) -> dict[str, tuple[str, Any]]:
    """Each member of a JSON object as (its raw text, its value), for signature checks."""
    decoder = json.JSONDecoder()
    members: dict[str, tuple[str, Any]] = {}

    def skip(i: int) -> int:
        while i < len(text) and text[i] in " \t\r\n":
            i += 1
        return i

    i = skip(0)
    if text[i:i + 1] != "{":
        raise ValueError("not a JSON object")
    i = skip(i + 1)
    while text[i:i + 1] != "}":
        name, i = decoder.raw_decode(text, i)
        i = skip(i)
        if not isinstance(name, str) or text[i:i + 1] != ":":
            raise ValueError("malformed member")
        start = skip(i + 1)
        value, end = decoder.raw_decode(text, start)
        members[name] = (text[start:end], value)
        i = skip(end)
        if text[i:i + 1] == ",":
            i = skip(i + 1)
        elif text[i:i + 1] != "}":
            raise ValueError("malformed object")
    if skip(i + 1) != len(text):
        raise ValueError("text after the object")
    return members


def _alipay_error(body: Mapping[str, Any], where: str) -> UpstreamError:
    code = str(body.get("code", ""))[:16]
    sub_code = str(body.get("sub_code", ""))[:64]
    # 20000: service unavailable; isp.*: Alipay's own failure; isv.invalid-*/missing-*
    # and 40006 (permissions): this app's configuration. The person's codes: access_denied.
    ours = (code in ("20000", "40006") or sub_code.startswith(("isp.", "isv.invalid-", "isv.missing-")))
    return UpstreamError(f"{where}: {code} {sub_code}".rstrip(),
                         retryable=ours and sub_code not in _PERSON_ERRORS)


def _identifier(body: Mapping[str, Any], name: str) -> str | None:
    value = body.get(name)
    if isinstance(value, str | int) and not isinstance(value, bool) and 0 < len(str(value)) <= 128:
        return str(value)
    return None


class AlipayConnector(Listed):
    def __init__(self, listing: Listing, *, app_id: str, private_key: RSAPrivateKey,
                 alipay_public_key: RSAPublicKey, scope: str, gateway_url: str,
                 authorize_url: str, http: ProviderHttp) -> None:
        super().__init__(listing, http.available)
        self._app_id = app_id
        self._private_key = private_key
        self._alipay_key = alipay_public_key
        self._scope = scope
        self._gateway = gateway_url
        self._authorize = authorize_url
        self._http = http

    async def authorization_origin(self) -> str:
        return origin_of(self._authorize)

    async def authorization_url(self, *, state: str, nonce: str, code_challenge: str,
                                redirect_uri: str) -> str:
        query = urlencode({"app_id": self._app_id, "scope": self._scope,
                           "redirect_uri": redirect_uri, "state": state})
        return f"{self._authorize}?{query}"

    async def callback_code(self, params: Mapping[str, str]) -> str:
        app_id = params.get("app_id")
        if app_id is not None and app_id != self._app_id:
            raise UpstreamError(f"{self.provider_id} callback: for another app_id")
        return code_parameter(params, "auth_code")  # Alipay's name for the code

    async def fetch_identity(self, *, code: str, code_verifier: str, redirect_uri: str,
                             nonce: str) -> UpstreamIdentity:
        token = await self.call("alipay.system.oauth.token",
                          {"grant_type": "authorization_code", "code": code})
        access_token = token.get("access_token")
        if not isinstance(access_token, str) or not access_token:
            raise UpstreamError(f"{self.provider_id} token: no access_token", retryable=True)
        ids = {name: _identifier(token, name) for name in ("user_id", "union_id", "open_id")}
        if not any(ids.values()):
            raise UpstreamError(f"{self.provider_id} token: no user_id, union_id or open_id")
        profile = None
        if self._scope == "auth_user":
            info = await self.call("alipay.user.info.share", {"auth_token": access_token})
            for name, value in ids.items():
                if value is not None and _identifier(info, name) not in (None, value):
                    raise UpstreamError(f"{self.provider_id} user info: {name} differs from the token's")
            raw = {**info, "region_code": region_code(info.get("country_code") or "CN",
                                                      info.get("province"))}
            if str(info.get("cert_type", "")) == "0":  # 0: resident ID card
                raw["id_card_number"] = info.get("cert_no")
            profile = catalogue_profile(raw, ALIPAY_FIELDS)
        return self._identity(ids, profile)

    def _identity(self, ids: dict[str, str | None], profile: dict[str, Any] | None) -> UpstreamIdentity:
        keyed = [(namespace, subject, kind) for namespace, subject, kind in (
            ("alipay:user_id", ids["user_id"], "user_id"),
            ("alipay:union_id", ids["union_id"], "union_id"),
            (self.provider_id, f"{self._app_id}\x00{ids['open_id']}" if ids["open_id"] else None,
             "open_id"),
        ) if subject]
        namespace, subject, kind = keyed[0]
        return UpstreamIdentity(
            self.provider_id, str(subject), profile or {}, namespace=namespace,
            also_known_as=tuple((n, str(s)) for n, s, _ in keyed[1:]), subject_kind=kind,
            has_profile=profile is not None,
        )

    async def call(self, method: str, business: Mapping[str, str]) -> dict[str, Any]:
        """One signed gateway call; the ``*_response`` object once its signature verified.

        Signing (RSA-2048, about a millisecond) and verifying run on the event loop: short
        CPU work, not worth a thread hop."""
        where = f"{self.provider_id} {method}"
        params = {
            "app_id": self._app_id, "method": method, "format": "JSON", "charset": "utf-8",
            "sign_type": "RSA2", "version": "1.0",
            "timestamp": datetime.now(UTC).astimezone(_CHINA_TIME).strftime("%Y-%m-%d %H:%M:%S"),
            **business,
        }
        params["sign"] = rsa2_sign(self._private_key, sign_content(params))
        reply = await self._http.request("POST", self._gateway, what=where, data=params,
                                         idempotent=False, headers={"Accept": "application/json"})
        if reply.status != 200:
            raise UpstreamError(f"{where}: HTTP {reply.status}", retryable=True)
        try:
            members = top_level_members(reply.text())
        except ValueError:
            raise UpstreamError(f"{where}: body is not a JSON object", retryable=True) from None
        name = method.replace(".", "_") + "_response"
        found = members.get(name) or members.get("error_response")
        if found is None:
            raise UpstreamError(f"{where}: no {name} in the answer", retryable=True)
        raw, body = found
        signature = members.get("sign", ("", None))[1]
        if not isinstance(body, dict):
            raise UpstreamError(f"{where}: {name} is not an object", retryable=True)
        failed = name not in members or str(body.get("code", "10000")) != "10000"
        if isinstance(signature, str) and signature:
            if not rsa2_verify(self._alipay_key, raw, signature):
                raise UpstreamError(f"{where}: response signature does not verify")
        elif not failed:
            raise UpstreamError(f"{where}: response is not signed")
        if failed:  # an unsigned error is still an error: nothing of it is used
            raise _alipay_error(body, where)
        return body
