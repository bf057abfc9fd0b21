"""Any OpenID Connect provider: discovery, code flow with PKCE, ID token validation.

The checks follow OIDC Core §3.1.3.7 and are each explicit:

- the discovery document's ``issuer`` equals the configured issuer exactly (Discovery §4.3);
- the callback's ``iss`` equals it too, and is required when the provider advertises
  ``authorization_response_iss_parameter_supported`` (RFC 9207 §2.4, against mix-up);
- the ID token is signed with an algorithm from the configured list (never ``none``, never
  a symmetric one: the list is asymmetric only) by a key from the provider's JWKS, which
  is cached and fetched again once when a token names an unknown ``kid`` (key roll-over);
- ``iss`` exact, ``aud`` contains our client id, ``azp`` is our client id when present or
  when there are several audiences, ``exp`` in the future and ``iat`` not in the future
  (both within the configured leeway), ``nonce`` equal to the one this sign-in sent,
  ``at_hash`` matches the access token when present (§3.1.3.8);
- the userinfo ``sub`` equals the ID token's (§5.3.4), or the profile is refused.

A person upstream is the pair (``iss``, ``sub``): the subject kept (as a keyed digest) is
both, so pointing a provider id at another issuer can never reach existing people.

Discovery and JWKS are fetched through :class:`~gateway.upstream.isolation.SharedFetch`:
cached, a failure remembered for ``failure_ttl`` seconds (a dead provider is not asked
once per request), and one fetch in flight shared by every request that needs it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OKPKey, RSAKey
from pydantic import SecretStr

from gateway.config.settings import is_loopback_host
from gateway.upstream.base import UpstreamError, UpstreamIdentity, callback_error, code_parameter, origin_of
from gateway.upstream.http import ProviderHttp
from gateway.upstream.isolation import SharedFetch
from gateway.upstream.listing import Listed, Listing
from gateway.upstream.profile import FieldMap, catalogue_profile, lookup, region_code

log = logging.getLogger(__name__)

OIDC_FIELDS: FieldMap = {
    "nickname": ("nickname", "preferred_username", "name"),
    "avatar": ("picture",),
    "gender": ("gender",),
    "email": ("email",),
    "phone": ("phone_number",),
    "birthdate": ("birthdate",),
    "real_name": ("name",),
    "address": ("address",),
    "region": ("region_code",),  # derived from address.country and address.region
    "city": ("address.locality",),
}

PublicKey = RSAKey | ECKey | OKPKey
_KEY_TYPES: dict[str, type[PublicKey]] = {"RSA": RSAKey, "EC": ECKey, "OKP": OKPKey}
_ALG_KEY_TYPE = {"RS256": "RSA", "PS256": "RSA", "ES256": "EC", "EdDSA": "OKP"}
_AT_HASH = {"RS256": hashlib.sha256, "PS256": hashlib.sha256, "ES256": hashlib.sha256,
            "EdDSA": hashlib.sha512}


def _endpoint(document: Mapping[str, Any], name: str, required: bool = True) -> str | None:
    value = document.get(name)
    if value is None and not required:
        return None
    parts = urlsplit(value) if isinstance(value, str) else None
    secure = parts is not None and parts.hostname is not None and (
        parts.scheme == "https" or (parts.scheme == "http" and is_loopback_host(parts.hostname)))
    if not secure:
        raise UpstreamError(f"discovery: {name} missing or not an https URL")
    return str(value)


def _with_query(url: str, params: dict[str, str]) -> str:
    return f"{url}{'&' if urlsplit(url).query else '?'}{urlencode(params)}"


class OIDCConnector(Listed):
    def __init__(self, listing: Listing, *, issuer: str, client_id: str, client_secret: SecretStr,
                 scopes: list[str], auth_method: str, algorithms: list[str], userinfo: bool,
                 fields: FieldMap, leeway: int, http: ProviderHttp, metadata_ttl: int,
                 failure_ttl: float) -> None:
        super().__init__(listing, http.available)
        self.issuer = issuer
        self._client_id = client_id
        self._secret = client_secret
        self._scope = " ".join(scopes)
        self._auth_method = auth_method
        self._algorithms = list(algorithms)
        self._use_userinfo = userinfo
        self._fields = fields
        self._leeway = leeway
        self._http = http
        # Cached for metadata_ttl; a failure remembered for failure_ttl; one fetch in flight.
        self._metadata = SharedFetch[dict[str, Any]](f"{self.provider_id} discovery",
                                                     ttl=metadata_ttl, failure_ttl=failure_ttl)
        self._keys = SharedFetch[list[PublicKey]](f"{self.provider_id} jwks", ttl=metadata_ttl,
                                                  failure_ttl=failure_ttl)

    def available(self) -> bool:
        # A discovery document that failed moments ago is not asked for again yet: until
        # then the provider is shown as unavailable rather than failing on each click.
        return super().available() and not self._metadata.failing()

    # -- discovery and keys ----------------------------------------------------------

    async def metadata(self) -> dict[str, Any]:
        """The provider's discovery document (cached for ``metadata_ttl`` seconds)."""
        return await self._metadata.get(self._fetch_metadata)

    async def _fetch_metadata(self) -> dict[str, Any]:
        url = f"{self.issuer.rstrip('/')}/.well-known/openid-configuration"
        reply = await self._http.request("GET", url, what=f"{self.provider_id} discovery",
                                         idempotent=True)
        if reply.status != 200:
            raise UpstreamError(f"{self.provider_id} discovery: HTTP {reply.status}",
                                retryable=True)
        document = reply.json()
        # OIDC Discovery §4.3: the issuer in the document is exactly the one configured.
        if document.get("issuer") != self.issuer:
            raise UpstreamError(f"{self.provider_id} discovery: issuer differs from settings")
        for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            _endpoint(document, name)
        _endpoint(document, "userinfo_endpoint", required=False)
        return document

    async def _key_set(self, refresh: bool) -> list[PublicKey]:
        jwks_uri = str((await self.metadata())["jwks_uri"])
        return await self._keys.get(lambda: self._fetch_keys(jwks_uri), refresh=refresh)

    async def _fetch_keys(self, jwks_uri: str) -> list[PublicKey]:
        reply = await self._http.request("GET", jwks_uri, what=f"{self.provider_id} jwks",
                                         idempotent=True)
        if reply.status != 200:
            raise UpstreamError(f"{self.provider_id} jwks: HTTP {reply.status}", retryable=True)
        entries = reply.json().get("keys")
        if not isinstance(entries, list):
            raise UpstreamError(f"{self.provider_id} jwks: no 'keys' list", retryable=True)
        keys: list[PublicKey] = []
        for entry in entries:
            # Signature keys of asymmetric types only: a symmetric ("oct") key in a JWKS
            # would let anyone who read the JWKS forge tokens (RFC 8725 §3.1).
            if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
                continue
            key_type = _KEY_TYPES.get(str(entry.get("kty")))
            if key_type is None:
                continue
            try:
                keys.append(key_type.import_key({k: v for k, v in entry.items() if k != "d"}))
            except (JoseError, ValueError, TypeError, KeyError):
                log.warning("provider key skipped", extra={"provider": self.provider_id})
        return keys

    async def _candidate_keys(self, kid: str | None, alg: str) -> list[PublicKey]:
        wanted = _ALG_KEY_TYPE[alg]
        for refresh in (False, True):  # an unknown kid: the provider may have rolled its keys
            keys = [k for k in await self._key_set(refresh) if k.key_type == wanted]
            if kid is not None:
                keys = [k for k in keys if k.kid == kid]
            if keys:
                return keys
        raise UpstreamError(f"{self.provider_id} ID token: no provider key for it")

    # -- the Connector protocol --------------------------------------------------------

    async def authorization_origin(self) -> str:
        return origin_of(str((await self.metadata())["authorization_endpoint"]))

    async def authorization_url(self, *, state: str, nonce: str, code_challenge: str,
                                redirect_uri: str) -> str:
        endpoint = str((await self.metadata())["authorization_endpoint"])
        return _with_query(endpoint, {
            "response_type": "code", "client_id": self._client_id, "redirect_uri": redirect_uri,
            "scope": self._scope, "state": state, "nonce": nonce,
            "code_challenge": code_challenge, "code_challenge_method": "S256",
        })

    async def callback_code(self, params: Mapping[str, str]) -> str:
        # RFC 9207 §2.4: checked before anything else, error responses included.
        iss = params.get("iss")
        if iss is None:
            promised = (await self.metadata()).get("authorization_response_iss_parameter_supported")
            if promised is True:
                raise UpstreamError(f"{self.provider_id} callback: iss missing (RFC 9207)")
        if iss is not None and iss != self.issuer:
            raise UpstreamError(f"{self.provider_id} callback: iss is another issuer (mix-up)")
        error = callback_error(params)
        if error is not None:
            raise error
        return code_parameter(params)

    async def fetch_identity(self, *, code: str, code_verifier: str, redirect_uri: str,
                             nonce: str) -> UpstreamIdentity:
        tokens = await self._exchange(code, code_verifier, redirect_uri)
        access_token = tokens.get("access_token")
        id_token = tokens.get("id_token")
        if not isinstance(access_token, str) or not access_token:
            raise UpstreamError(f"{self.provider_id} token: no access_token")
        if str(tokens.get("token_type", "")).lower() != "bearer":
            raise UpstreamError(f"{self.provider_id} token: token_type is not Bearer")
        if not isinstance(id_token, str) or not id_token:
            raise UpstreamError(f"{self.provider_id} token: no id_token")
        claims = await self.verify_id_token(id_token, nonce=nonce, access_token=access_token)
        profile_claims = dict(claims)
        if self._use_userinfo and (await self.metadata()).get("userinfo_endpoint"):
            profile_claims.update(await self._userinfo(access_token, str(claims["sub"])))
        amr = claims.get("amr")
        methods = tuple(str(m)[:32] for m in amr[:10]) if isinstance(amr, list) else ()
        return UpstreamIdentity(
            self.provider_id, f"{self.issuer}\x00{claims['sub']}",
            catalogue_profile(self._trusted(profile_claims), self._fields), methods,
            subject_kind="iss+sub",
        )

    # -- steps -------------------------------------------------------------------------

    async def _exchange(self, code: str, code_verifier: str, redirect_uri: str) -> dict[str, Any]:
        data = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
                "code_verifier": code_verifier}
        auth = None
        if self._auth_method == "client_secret_basic":
            auth = (self._client_id, self._secret.get_secret_value())
        else:
            data |= {"client_id": self._client_id, "client_secret": self._secret.get_secret_value()}
        reply = await self._http.request("POST", str((await self.metadata())["token_endpoint"]),
                                         what=f"{self.provider_id} token", idempotent=False,
                                         data=data, auth=auth, headers={"Accept": "application/json"})
        body = reply.json()
        if reply.status != 200 or "error" in body:
            error = str(body.get("error", f"HTTP {reply.status}"))[:64]
            # The person's code is bad (invalid_grant): access_denied. Our credentials or
            # the provider's state: temporarily_unavailable, and the operator must look.
            retryable = error in ("invalid_client", "unauthorized_client", "server_error",
                                  "temporarily_unavailable")
            raise UpstreamError(f"{self.provider_id} token: {error}", retryable=retryable)
        return body

    async def verify_id_token(self, id_token: str, *, nonce: str,
                              access_token: str | None) -> dict[str, Any]:
        """The ID token's claims after every check in the module docstring."""
        where = f"{self.provider_id} ID token"
        try:
            header = jws.extract_compact(id_token.encode()).headers()
        except (JoseError, ValueError, UnicodeError):
            raise UpstreamError(f"{where}: malformed") from None
        alg = header.get("alg")
        if alg not in self._algorithms:  # "none", HS256 and anything not configured
            raise UpstreamError(f"{where}: algorithm {str(alg)[:16]!r} not accepted")
        kid = header.get("kid")
        claims: dict[str, Any] | None = None
        for key in await self._candidate_keys(kid if isinstance(kid, str) else None, alg):
            try:
                claims = jwt.decode(id_token, key, algorithms=self._algorithms).claims
                break
            except JoseError:
                continue
        if claims is None:
            raise UpstreamError(f"{where}: bad signature")
        self._check_claims(claims, nonce, where)
        at_hash = claims.get("at_hash")
        if at_hash is not None and access_token is not None:
            digest = _AT_HASH[alg](access_token.encode()).digest()
            expected = base64.urlsafe_b64encode(digest[: len(digest) // 2]).rstrip(b"=").decode()
            if not hmac.compare_digest(str(at_hash), expected):
                raise UpstreamError(f"{where}: at_hash does not match the access token")
        return claims

    def _check_claims(self, claims: dict[str, Any], nonce: str, where: str) -> None:
        now = time.time()
        if claims.get("iss") != self.issuer:
            raise UpstreamError(f"{where}: iss is not the configured issuer")
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if self._client_id not in audiences:
            raise UpstreamError(f"{where}: aud does not contain our client id")
        azp = claims.get("azp")
        if (len(audiences) > 1 or azp is not None) and azp != self._client_id:
            raise UpstreamError(f"{where}: azp is not our client id")
        exp, iat = claims.get("exp"), claims.get("iat")
        if not isinstance(exp, int | float) or isinstance(exp, bool) or exp + self._leeway <= now:
            raise UpstreamError(f"{where}: expired or without exp")
        if not isinstance(iat, int | float) or isinstance(iat, bool) or iat - self._leeway > now:
            raise UpstreamError(f"{where}: iat missing or in the future")
        if not hmac.compare_digest(str(claims.get("nonce", "")).encode(), nonce.encode()):
            raise UpstreamError(f"{where}: nonce is not the one this sign-in sent")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub or len(sub) > 255:
            raise UpstreamError(f"{where}: sub missing")

    async def _userinfo(self, access_token: str, sub: str) -> dict[str, Any]:
        reply = await self._http.request("GET", str((await self.metadata())["userinfo_endpoint"]),
                                         what=f"{self.provider_id} userinfo", idempotent=True,
                                         headers={"Authorization": f"Bearer {access_token}",
                                                  "Accept": "application/json"})
        if reply.status != 200:
            raise UpstreamError(f"{self.provider_id} userinfo: HTTP {reply.status}")
        if reply.content_type.startswith("application/jwt"):
            raise UpstreamError(f"{self.provider_id} userinfo: signed responses are not supported")
        claims = reply.json()
        # OIDC Core §5.3.4: a userinfo answer about someone else must not be used.
        if claims.get("sub") != sub:
            raise UpstreamError(f"{self.provider_id} userinfo: sub differs from the ID token")
        return claims

    @staticmethod
    def _trusted(claims: dict[str, Any]) -> dict[str, Any]:
        """Claims fit for the profile: an address or phone the provider says it has *not*
        verified is dropped (absent flags are taken as the provider's word)."""
        kept = dict(claims)
        if kept.get("email_verified") is False:
            kept.pop("email", None)
        if kept.get("phone_number_verified") is False:
            kept.pop("phone_number", None)
        kept["region_code"] = region_code(lookup(kept, "address.country"),
                                          lookup(kept, "address.region"))
        return kept
