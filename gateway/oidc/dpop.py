"""DPoP: access tokens bound to a key the client holds (RFC 9449).

A client that sends a ``DPoP`` header — a JWT it signed with its own key, naming the request
(``htm``, ``htu``), the time (``iat``) and a fresh ``jti`` — gets ``token_type: DPoP`` access
tokens bound to that key's RFC 7638 thumbprint (``cnf.jkt``); refresh tokens of public
clients are bound too. A bound token works at the resource endpoint (``/userinfo``) only with
``Authorization: DPoP <token>`` and a proof by the same key that also carries ``ath``, the
hash of the token; presented as a Bearer token it is refused.

Checks, in the order below (:meth:`DPoPVerifier.verify`): exactly one compact JWT of bounded
size; header ``typ`` ``dpop+jwt``, an asymmetric ``alg`` from :data:`DPOP_ALGORITHMS` and a
public ``jwk`` without private members; the signature by that key; ``htm`` and ``htu`` equal
to the request (``htu`` without query and fragment, compared with the issuer-based public
URL, never the Host header); ``iat`` within ``dpop_proof_max_age`` seconds; the server nonce
when required; ``ath`` at resource endpoints; and last ``jti`` single use — one
``SET NX EX`` in Redis whose TTL covers the whole ``iat`` window, so a proof can never be
accepted twice, by any worker.

Server nonces (RFC 9449 §8, §9) are stateless: the HMAC of the current time window under a
key derived from the gateway's pairwise secret, so every worker makes and accepts the same
values without storing anything; a nonce stays valid for one to two windows.

Refusals are RFC 6749 / RFC 6750 errors: ``invalid_dpop_proof`` (400 at the token endpoint,
401 with a ``DPoP`` challenge at userinfo) and ``use_dpop_nonce`` with a ``DPoP-Nonce`` header.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from authlib.oauth2.rfc6749 import InvalidGrantError, OAuth2Error
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import import_key
from joserfc.jws import JWSRegistry

from gateway.oidc import fapi
from gateway.oidc.clients import Shop

if TYPE_CHECKING:
    import redis

    from gateway.config import Settings
    from gateway.oidc.context import ProviderContext
    from gateway.store.keys import KeySpace

# Asymmetric only (RFC 9449 §4.2: no MAC, no "none"). Ed25519 under RFC 9864's fully
# specified name and the older "EdDSA".
DPOP_ALGORITHMS = ("ES256", "Ed25519", "EdDSA", "PS256", "RS256")
PROOF_TYPE = "dpop+jwt"
MAX_PROOF_CHARS = 8192  # an RSA-4096 key and its signature fit with room to spare
MAX_JTI_CHARS = 256
# RFC 7638 §3.2: the required members of each key type, in lexicographic order.
THUMBPRINT_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n"),
                      "OKP": ("crv", "kty", "x")}
PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
JKT_PATTERN = re.compile(r"[A-Za-z0-9_-]{43}")  # base64url of a SHA-256 digest, unpadded
NONCE_LABEL = b"dpop-nonce\x00"


def _registry(alg: str) -> JWSRegistry:
    """A JWS registry allowing only ``alg``, with room for an RSA key in the header
    (joserfc's default header limit, 512 bytes, is less than an RSA-2048 ``jwk``)."""
    registry = JWSRegistry(algorithms=[alg])
    registry.max_header_length = 4096
    return registry


REGISTRIES = {alg: _registry(alg) for alg in DPOP_ALGORITHMS}


class InvalidDPoPProofError(OAuth2Error):  # type: ignore[misc]
    """RFC 9449 §5, §7: the DPoP proof is missing, malformed or does not match the request."""

    error = "invalid_dpop_proof"
    status_code = 400


class UseDPoPNonceError(OAuth2Error):  # type: ignore[misc]
    """RFC 9449 §8: the proof must carry the server's nonce, sent in ``DPoP-Nonce``."""

    error = "use_dpop_nonce"
    status_code = 400

    def __init__(self, nonce: str, description: str = "Resend the request with a DPoP proof "
                 "carrying the nonce in the DPoP-Nonce header.") -> None:
        super().__init__(description=description)
        self.nonce = nonce

    def get_headers(self) -> list[tuple[str, str]]:
        return [*super().get_headers(), ("DPoP-Nonce", self.nonce)]


@dataclass(frozen=True, slots=True)
class Proof:
    """A verified proof: the thumbprint of its key, and its ``jti``."""

    jkt: str
    jti: str


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def thumbprint(jwk: Mapping[str, Any]) -> str:
    """The RFC 7638 JWK thumbprint (SHA-256, base64url): the required members only, sorted,
    no whitespace. Raises ValueError for a key type or member it cannot use."""
    members = THUMBPRINT_MEMBERS.get(str(jwk.get("kty")))
    if members is None:
        raise ValueError("unsupported key type")
    values = {name: jwk.get(name) for name in members}
    if not all(isinstance(value, str) and value for value in values.values()):
        raise ValueError("missing key members")
    canonical = json.dumps(values, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return b64url(hashlib.sha256(canonical.encode("utf-8")).digest())


def access_token_hash(access_token: str) -> str:
    """``ath`` (RFC 9449 §4.2): base64url of the SHA-256 of the access token's ASCII."""
    return b64url(hashlib.sha256(access_token.encode("ascii", "replace")).digest())


def normalise_htu(url: str) -> str:
    """Scheme and host lowercased, default port and query and fragment dropped, an empty
    path made ``/`` (RFC 9449 §4.3 point 9, RFC 3986 §6.2.2-6.2.3)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    if port is not None and (scheme, port) not in (("https", 443), ("http", 80)):
        host = f"{host}:{port}"
    return urlunsplit((scheme, host, parts.path or "/", "", ""))


def _same_url(htu: str, url: str) -> bool:
    try:
        return normalise_htu(htu) == normalise_htu(url)
    except ValueError:  # not a URL (a bad port, an unclosed IPv6 bracket)
        return False


def _no_constants(name: str) -> None:
    """JSON's NaN and Infinity are not JSON (RFC 8259 §6); a NaN ``iat`` would compare
    as in any window."""
    raise ValueError(f"{name} is not a JSON number")


def required_for(shop: Shop, settings: Settings) -> bool:
    """Whether ``shop`` must send a DPoP proof with every token request: its file says
    ``dpop_bound_access_tokens: true`` or it is a FAPI 2.0 shop (:func:`fapi.sender_constrained`),
    or it is a public client and the gateway requires DPoP of those
    (``dpop_required_for_public_clients``)."""
    return (fapi.sender_constrained(shop.config)
            or (shop.config.is_public and settings.dpop_required_for_public_clients))


def proof_headers(headers: Mapping[str, str]) -> list[str]:
    """Every ``DPoP`` header of a request (Starlette headers keep repeated ones)."""
    getlist = getattr(headers, "getlist", None)
    if getlist is not None:
        return list(getlist("dpop"))
    value = headers.get("dpop") or headers.get("DPoP")
    return [value] if value is not None else []


class DPoPVerifier:
    """Checks proofs and makes server nonces; cheap to build (one HMAC), so made per request."""

    def __init__(self, redis_client: redis.Redis, keys: KeySpace, secret: bytes, *,
                 max_age: int, nonce_required: bool, nonce_lifetime: int) -> None:
        self._redis = redis_client
        self._keys = keys
        self._nonce_key = hmac.new(secret, NONCE_LABEL, hashlib.sha256).digest()
        self.max_age = max_age
        self.nonce_required = nonce_required
        self.nonce_lifetime = nonce_lifetime

    @classmethod
    def for_context(cls, ctx: ProviderContext) -> DPoPVerifier:
        settings = ctx.settings
        return cls(ctx.store.redis, ctx.store.keys, ctx.pairwise_secret,
                   max_age=settings.dpop_proof_max_age,
                   nonce_required=settings.dpop_nonce_required,
                   nonce_lifetime=settings.dpop_nonce_lifetime)

    # -- nonces ------------------------------------------------------------------------

    def _nonce_for(self, window: int) -> str:
        mac = hmac.new(self._nonce_key, str(window).encode(), hashlib.sha256).digest()
        return b64url(mac[:18])

    def nonce(self, now: float | None = None) -> str:
        """The nonce to hand out now (``DPoP-Nonce``)."""
        return self._nonce_for(int((time.time() if now is None else now) // self.nonce_lifetime))

    def _nonce_is_fresh(self, value: object, now: float) -> bool:
        if not isinstance(value, str):
            return False
        window = int(now // self.nonce_lifetime)
        return any(hmac.compare_digest(value, self._nonce_for(w)) for w in (window, window - 1))

    # -- proofs ------------------------------------------------------------------------

    def verify(self, values: Sequence[str], *, method: str, url: str,
               access_token: str | None = None, now: float | None = None) -> Proof:
        """Verify the request's DPoP header values; raises :class:`InvalidDPoPProofError` or
        :class:`UseDPoPNonceError`. ``access_token``: at a resource endpoint, the token
        the proof must name in ``ath``."""
        now = time.time() if now is None else now
        if len(values) != 1:
            raise InvalidDPoPProofError(description="Send exactly one DPoP header.")
        proof = values[0].strip()
        if len(proof) > MAX_PROOF_CHARS or proof.count(".") != 2:
            raise InvalidDPoPProofError(description="The DPoP proof is not a compact JWT.")
        header = self._header(proof)
        try:
            key = import_key(header["jwk"])
            signed = jws.deserialize_compact(proof, key, registry=REGISTRIES[header["alg"]])
            claims = json.loads(signed.payload, parse_constant=_no_constants)
        except (JoseError, ValueError, TypeError, KeyError, UnicodeDecodeError):
            raise InvalidDPoPProofError(description="The DPoP proof's signature does not verify.") from None
        if not isinstance(claims, dict):
            raise InvalidDPoPProofError(description="The DPoP proof's payload is not a JSON object.")
        self._check_claims(claims, method=method, url=url, access_token=access_token, now=now)
        jkt = thumbprint(header["jwk"])
        jti = claims["jti"]
        if not self._first_use(jkt, jti):
            raise InvalidDPoPProofError(description="The DPoP proof was used before.")
        return Proof(jkt, jti)

    @staticmethod
    def _header(proof: str) -> dict[str, Any]:
        try:
            header = json.loads(_b64url_decode(proof.split(".", 1)[0]), parse_constant=_no_constants)
        except (ValueError, UnicodeDecodeError, binascii.Error):
            raise InvalidDPoPProofError(description="The DPoP proof's header is not JSON.") from None
        if not isinstance(header, dict):
            raise InvalidDPoPProofError(description="The DPoP proof's header is not a JSON object.")
        if header.get("typ") != PROOF_TYPE:
            raise InvalidDPoPProofError(description="The DPoP proof's typ must be dpop+jwt.")
        if header.get("alg") not in DPOP_ALGORITHMS:
            raise InvalidDPoPProofError(
                description=f"The DPoP proof's alg must be one of {' '.join(DPOP_ALGORITHMS)}.")
        jwk = header.get("jwk")
        if not isinstance(jwk, dict) or jwk.get("kty") not in THUMBPRINT_MEMBERS:
            raise InvalidDPoPProofError(description="The DPoP proof needs a public jwk in its header.")
        if PRIVATE_MEMBERS & jwk.keys():
            raise InvalidDPoPProofError(description="The DPoP proof's jwk holds a private key.")
        try:
            thumbprint(jwk)
        except ValueError:
            raise InvalidDPoPProofError(description="The DPoP proof's jwk is incomplete.") from None
        return header

    def _check_claims(self, claims: dict[str, Any], *, method: str, url: str,
                      access_token: str | None, now: float) -> None:
        jti = claims.get("jti")
        if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI_CHARS:
            raise InvalidDPoPProofError(description="The DPoP proof needs a jti.")
        if claims.get("htm") != method.upper():
            raise InvalidDPoPProofError(description="The DPoP proof's htm is not this request's method.")
        htu = claims.get("htu")
        if not isinstance(htu, str) or not _same_url(htu, url):
            raise InvalidDPoPProofError(description="The DPoP proof's htu is not this endpoint's URL.")
        iat = claims.get("iat")
        if (isinstance(iat, bool) or not isinstance(iat, int | float) or not math.isfinite(iat)
                or abs(now - iat) > self.max_age):
            raise InvalidDPoPProofError(
                description=f"The DPoP proof's iat must be within {self.max_age} seconds of now.")
        if self.nonce_required and not self._nonce_is_fresh(claims.get("nonce"), now):
            raise UseDPoPNonceError(self.nonce(now))
        if access_token is not None:
            ath = claims.get("ath")
            if not isinstance(ath, str) or not hmac.compare_digest(ath, access_token_hash(access_token)):
                raise InvalidDPoPProofError(
                    description="The DPoP proof's ath does not match the access token.")

    def _first_use(self, jkt: str, jti: str) -> bool:
        """One ``SET NX EX``: true only for the first request presenting this proof. The TTL
        covers every moment its ``iat`` is acceptable (before and after now)."""
        digest = hashlib.sha256(f"{jkt}\x00{jti}".encode()).hexdigest()
        ttl = 2 * self.max_age + 5
        return bool(self._redis.set(self._keys.dpop_proof_jti(digest), "1", nx=True, ex=ttl))


def check_token_request(ctx: ProviderContext, request: Any, client: Shop,
                        bound_jkt: str | None) -> str | None:
    """The DPoP part of a token request: the thumbprint the new tokens are bound to, or None
    for Bearer tokens. ``bound_jkt``: the key the code (``dpop_jkt``) or refresh token is
    already bound to, which the proof must then use."""
    values = proof_headers(request.headers)
    if not values:
        if bound_jkt is not None:
            raise InvalidDPoPProofError(description="This grant is bound to a DPoP key: send a proof.")
        if required_for(client, ctx.settings):
            raise InvalidDPoPProofError(description="This client must send a DPoP proof.")
        return None
    proof = DPoPVerifier.for_context(ctx).verify(values, method=request.method,
                                                 url=ctx.endpoint("/token"))
    if bound_jkt is not None and not hmac.compare_digest(proof.jkt, bound_jkt):
        raise InvalidGrantError(description="The grant is bound to another DPoP key.")
    return proof.jkt
