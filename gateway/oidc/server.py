"""authlib's AuthorizationServer and grants, configured for the gateway.

Framework-free: requests come in as :class:`ProviderRequest` (built once by the bridge) and
responses leave as plain ``(status, body, headers)`` tuples. authlib is synchronous, so the
bridge runs these calls in a worker thread, and the hooks below use the synchronous Redis
client directly (docs/architecture.md, "The authlib bridge").
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from authlib.oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import (
    InvalidClientError,
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    OAuth2Error,
    OAuth2Payload,
    OAuth2Request,
    grants,
)
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from authlib.oidc.core import OpenIDCode
from authlib.oidc.core.grants.util import create_half_hash
from authlib.oidc.rpinitiated import EndSessionEndpoint
from joserfc import jwt
from joserfc.errors import JoseError

from gateway.audit.events import Action
from gateway.audit.relay import stage
from gateway.oidc import fapi
from gateway.oidc.clients import SUPPORTED_SCOPES, Shop
from gateway.oidc.context import ProviderContext
from gateway.oidc.dpop import JKT_PATTERN, DPoPVerifier, check_token_request, proof_headers
from gateway.oidc.sessions import Person
from gateway.oidc.tokens import AuthorizationCode, TokenRecord, new_family
from gateway.policy import ClaimsParameterError, requested_fields
from gateway.store.grants import Exchange
from gateway.vault.jwe import encrypt_nested_jwt
from gateway.vault.signing import SigningAlg

log = logging.getLogger(__name__)

TOKEN_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]
# Ed25519 under both names: "Ed25519" is RFC 9864's fully specified one (openid-client
# sends it), "EdDSA" the older polymorphic one that RFC 9864 deprecates but libraries
# still send.
ASSERTION_ALGORITHMS = ("ES256", "RS256", "PS256", "Ed25519", "EdDSA")
MAX_ASSERTION_SECONDS = 300  # client assertions are made per request; minutes are plenty
LEGACY_ASSERTION_SECONDS = 600  # oic 1.7 makes 10-minute assertions
JSON_HEADERS = [("Content-Type", "application/json"), ("Cache-Control", "no-store"),
                ("Pragma", "no-cache")]
Response = tuple[int, Any, list[tuple[str, str]]]


class ProviderPayload(OAuth2Payload):  # type: ignore[misc]
    def __init__(self, fields: list[tuple[str, str]]) -> None:
        self._datalist: defaultdict[str, list[str]] = defaultdict(list)
        for name, value in fields:
            self._datalist[name].append(value)
        self._data = {name: values[0] for name, values in self._datalist.items()}

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> defaultdict[str, list[str]]:
        return self._datalist


class ProviderRequest(OAuth2Request):  # type: ignore[misc]
    """An HTTP request as authlib wants it: method, URL, headers, query and form fields."""

    def __init__(self, method: str, uri: str, headers: Mapping[str, str],
                 query: list[tuple[str, str]], form: list[tuple[str, str]]) -> None:
        super().__init__(method, uri, headers=headers)
        self._args = ProviderPayload(query).data
        self._form = ProviderPayload(form).data
        self.payload = ProviderPayload(query + form)

    @property
    def args(self) -> dict[str, str]:
        return self._args

    @property
    def form(self) -> dict[str, str]:
        return self._form


# -- authorization code ----------------------------------------------------------------


class RequestNotSupportedError(OAuth2Error):  # type: ignore[misc]
    error = "request_not_supported"
    description = "Request objects are not supported."


class RequestUriNotSupportedError(OAuth2Error):  # type: ignore[misc]
    error = "request_uri_not_supported"
    description = "request_uri is not supported."


class S256CodeChallenge(CodeChallenge):  # type: ignore[misc]
    """PKCE with S256 only, on every authorization request (RFC 9700 §2.1.1, RFC 7636)."""

    DEFAULT_CODE_CHALLENGE_METHOD = "S256"
    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]
    CODE_CHALLENGE_METHODS = {"S256": CodeChallenge.CODE_CHALLENGE_METHODS["S256"]}

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("PKCE is required: missing 'code_challenge'.")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("'code_challenge_method' must be S256.")
        super().validate_code_challenge(grant, redirect_uri)


class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = TOKEN_AUTH_METHODS

    @property
    def ctx(self) -> ProviderContext:
        return self.server.ctx  # type: ignore[no-any-return]

    @staticmethod
    def validate_authorization_redirect_uri(request: OAuth2Request, client: Shop) -> str:
        # OIDC Core §3.1.2.1: redirect_uri is required; RFC 9700 §2.1: exact match. The
        # description never echoes the URI (it may hold characters not allowed there).
        redirect_uri = request.payload.redirect_uri
        if not redirect_uri:
            raise InvalidRequestError("Missing 'redirect_uri'.")
        if not client.check_redirect_uri(redirect_uri):
            raise InvalidRequestError("The 'redirect_uri' is not registered for this client.")
        return str(redirect_uri)

    def validate_authorization_request(self) -> str:
        redirect_uri: str = super().validate_authorization_request()
        data = self.request.payload.data
        # OIDC Core §6 / RFC 9101: request objects are not supported, and say so rather than
        # silently ignoring parameters the shop thinks are in force.
        if "request" in data:
            raise RequestNotSupportedError(redirect_uri=redirect_uri)
        if "request_uri" in data:
            raise RequestUriNotSupportedError(redirect_uri=redirect_uri)
        if data.get("response_mode", "query") != "query":
            raise InvalidRequestError("Unsupported 'response_mode'; only 'query' is supported.",
                                      redirect_uri=redirect_uri)
        if "openid" not in (self.request.scope or "").split():
            raise InvalidScopeError("The scope must include 'openid'.", redirect_uri=redirect_uri)
        if "dpop_jkt" in data and not JKT_PATTERN.fullmatch(data["dpop_jkt"]):  # RFC 9449 §10
            raise InvalidRequestError("'dpop_jkt' must be a base64url SHA-256 JWK thumbprint.",
                                      redirect_uri=redirect_uri)
        try:
            self.requested_fields = sorted(requested_fields(
                self.request.scope, self.request.payload.data.get("claims"), self.ctx.catalogue))
        except ClaimsParameterError as error:
            raise InvalidRequestError(str(error), redirect_uri=redirect_uri) from None
        return redirect_uri

    def generate_authorization_code(self) -> str:
        person: Person = self.request.user
        return self.ctx.tokens.new_credential(person.id)

    def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
        person: Person = request.user
        data = request.payload.data
        # The flow read the grant generation together with the consent record it decided on;
        # the code is stored only if that generation is still current (StaleGrantError).
        self.ctx.tokens.issue_code(code, AuthorizationCode(
            client_id=request.client.client_id,
            person_id=person.id,
            redirect_uri=data["redirect_uri"],
            scope=request.scope,
            family=new_family(),
            auth_time=person.auth_time,
            nonce=data.get("nonce"),
            code_challenge=data.get("code_challenge"),
            code_challenge_method=data.get("code_challenge_method"),
            amr=list(person.amr),
            fields=list(self.requested_fields),
            dpop_jkt=data.get("dpop_jkt"),
        ), getattr(self, "consent_generation", None),
            ttl=fapi.code_lifetime(request.client.config, self.ctx.tokens.code_ttl))
        self.ctx.record("code_issued", shop=request.client.client_id, person=person.id)

    def query_authorization_code(self, code: str, client: Shop) -> AuthorizationCode | None:
        # Peeked, not used up: authlib checks redirect_uri and the PKCE verifier next, and
        # only :meth:`ProviderServer.save_token` takes the code (so a wrong verifier or a
        # forged request cannot burn a code it does not own).
        record = self.ctx.tokens.peek_code(code)
        if record is None:
            log.info("code rejected", extra={"reason": "unknown, expired, replayed or withdrawn",
                                             "client_id": client.client_id})
            return None
        if record.client_id != client.client_id:
            log.info("code rejected", extra={"reason": "issued to another client",
                                             "client_id": client.client_id})
            return None
        return record

    def delete_authorization_code(self, authorization_code: AuthorizationCode) -> None:
        """Nothing to do: :meth:`ProviderServer.save_token` took the code atomically."""

    def validate_token_request(self) -> None:
        super().validate_token_request()
        code: AuthorizationCode = self.request.authorization_code
        self.request.dpop_jkt = check_token_request(self.ctx, self.request, self.request.client,
                                                    code.dpop_jkt)

    def authenticate_user(self, authorization_code: AuthorizationCode) -> Person:
        return Person(authorization_code.person_id, authorization_code.auth_time,
                      list(authorization_code.amr))


class GatewayOpenIDCode(OpenIDCode):  # type: ignore[misc]
    """ID tokens: who and when, signed by the key ring; no profile claims (see claims.py)."""

    def __init__(self, ctx: ProviderContext) -> None:
        super().__init__(require_nonce=False)
        self.ctx = ctx

    def exists_nonce(self, nonce: str, request: OAuth2Request) -> bool:
        # Nonce replay is the relying party's check (OIDC Core §3.1.3.7 step 11); the
        # provider only carries the value into the ID token.
        return False

    def generate_user_info(self, user: Person, scope: str) -> dict[str, Any]:
        return {}

    def encode_id_token(self, token: dict[str, Any], request: OAuth2Request) -> str:
        shop: Shop = request.client
        alg: SigningAlg = shop.id_token_signed_response_alg
        now = int(time.time())
        code: AuthorizationCode = request.authorization_code
        claims: dict[str, Any] = {
            "iss": self.ctx.issuer,
            "sub": self.ctx.subject_for(shop, request.user.id),
            "aud": shop.client_id,
            "iat": now,
            "exp": now + self.ctx.settings.id_token_ttl,
            "auth_time": code.auth_time,
        }
        claims.update(self.get_authorization_code_claims(code))
        at_hash = create_half_hash(token["access_token"], alg)
        claims["at_hash"] = at_hash.decode()
        signed = self.ctx.signing_keys.sign(claims, alg)
        encryption = shop.config.encryption("id_token")
        if encryption is None:
            return signed
        return encrypt_nested_jwt(signed, shop.jwks_document(), alg=encryption[0], enc=encryption[1])


# -- refresh token ---------------------------------------------------------------------


class RotatingRefreshTokenGrant(grants.RefreshTokenGrant):  # type: ignore[misc]
    """Refresh with rotation: each refresh token works once; a replay ends the family."""

    TOKEN_ENDPOINT_AUTH_METHODS = TOKEN_AUTH_METHODS
    INCLUDE_NEW_REFRESH_TOKEN = True

    @property
    def ctx(self) -> ProviderContext:
        return self.server.ctx  # type: ignore[no-any-return]

    def authenticate_refresh_token(self, refresh_token: str) -> TokenRecord | None:
        # Peeked, not used up: a request asking for a wider scope fails with invalid_scope
        # and leaves the refresh token working; :meth:`ProviderServer.save_token` rotates it.
        # A token used up seconds ago comes with the answer it got (a repeat, see
        # gateway/oidc/repeats.py): the request is still validated in full (client, scope,
        # DPoP key) against its record before that answer is given again.
        record, self.request.repeated_answer = self.ctx.tokens.peek_refresh_token(refresh_token)
        return record

    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        repeated: dict[str, Any] | None = getattr(self.request, "repeated_answer", None)
        if repeated is None:
            return super().create_token_response()  # type: ignore[no-any-return]
        log.info("refresh repeated within the repeat window: the same answer again",
                 extra={"client_id": self.request.client.client_id})
        return 200, repeated, self.TOKEN_RESPONSE_HEADER

    def authenticate_user(self, refresh_token: TokenRecord) -> Person:
        return Person(refresh_token.person_id, refresh_token.auth_time)

    def validate_token_request(self) -> None:
        super().validate_token_request()
        record: TokenRecord = self.request.refresh_token
        self.request.dpop_jkt = check_token_request(self.ctx, self.request, self.request.client,
                                                    record.jkt)

    def revoke_old_credential(self, refresh_token: TokenRecord) -> None:
        """Nothing to do: :meth:`ProviderServer.save_token` took it atomically."""


# -- client authentication -------------------------------------------------------------


class PrivateKeyJWT(JWTBearerClientAssertion):  # type: ignore[misc]
    """``private_key_jwt`` (OIDC Core §9, RFC 7523 §2.2), with single-use ``jti``."""

    CLIENT_AUTH_METHOD = "private_key_jwt"

    def __init__(self, ctx: ProviderContext) -> None:
        super().__init__(validate_jti=True, leeway=30)
        self.ctx = ctx

    def get_audiences(self) -> list[str]:
        # Checked strictly in process_assertion_claims; authlib's own check sees the same.
        return [self.ctx.issuer] + [self.ctx.endpoint(p) for p in ("/token", "/revoke", "/introspect")]

    def process_assertion_claims(self, assertion: str, resolve_key: Any) -> Any:
        # Explicit algorithm list: asymmetric only, so an assertion can never be checked
        # with a shared secret (RFC 8725 §3.1).
        try:
            token = jwt.decode(assertion, resolve_key, algorithms=list(ASSERTION_ALGORITHMS))
        except (JoseError, ValueError) as error:
            raise InvalidClientError(description="Invalid client assertion.") from error
        shop = self.ctx.shops.get(str(token.claims.get("sub")))
        if shop is not None and not fapi.assertion_alg_allowed(shop.config, token.header.get("alg")):
            raise InvalidClientError(description="FAPI 2.0: sign the assertion with PS256, ES256 or EdDSA.")
        self._check_audience_and_lifetime(token.claims)
        self.verify_claims(token.claims)
        return token.claims

    def _check_audience_and_lifetime(self, claims: dict[str, Any]) -> None:
        """FAPI 2.0 §5.3.2.1 and the OpenID Foundation's 2025 audience advisory: ``aud`` is
        the issuer identifier, as a single string (an array naming another audience too, or
        an endpoint URL, lets an assertion made for one server be replayed at another).
        Shops whose library still sends the token endpoint may opt in to that, one string
        only (``legacy_assertion_audience``). Assertions live minutes, not a year: the jti
        store is bounded by the same limit."""
        shop = self.ctx.shops.get(claims.get("sub") if isinstance(claims.get("sub"), str) else None)
        legacy = bool(shop and shop.config.legacy_assertion_audience)
        allowed = [self.ctx.issuer] + ([self.ctx.endpoint("/token")] if legacy else [])
        audience = claims.get("aud")
        if legacy and isinstance(audience, list) and len(audience) == 1:
            audience = audience[0]  # oic 1.7 writes its one audience as a one-element array
        if not isinstance(audience, str) or audience not in allowed:
            raise InvalidClientError(
                description="The assertion's 'aud' must be the issuer identifier, as a single string.")
        exp, iat = claims.get("exp"), claims.get("iat", int(time.time()))
        if not isinstance(exp, int) or not isinstance(iat, int):
            raise InvalidClientError(description="The assertion needs numeric 'exp' and 'iat'.")
        longest = LEGACY_ASSERTION_SECONDS if legacy else MAX_ASSERTION_SECONDS
        if exp - iat > longest or exp - time.time() > longest + self.leeway:
            raise InvalidClientError(description=f"The assertion may live at most {longest} seconds.")

    def validate_jti(self, claims: dict[str, Any], jti: str) -> bool:
        key = self.ctx.store.keys.client_assertion_jti(
            str(claims["sub"]), hashlib.sha256(str(jti).encode()).hexdigest()
        )
        ttl = max(60, int(claims.get("exp", 0)) - int(time.time()) + 60)
        return bool(self.ctx.store.redis.set(key, "1", nx=True, ex=ttl))

    def resolve_client_public_key(self, client: Shop) -> Any:
        try:
            return client.public_keys()
        except Exception as error:  # noqa: BLE001 - any fetch/parse failure is an auth failure
            log.warning("client keys unavailable", extra={"client_id": client.client_id,
                                                          "reason": type(error).__name__})
            raise InvalidClientError(description="The client's keys are unavailable.") from None


# -- revocation and introspection ------------------------------------------------------


class GatewayRevocationEndpoint(RevocationEndpoint):  # type: ignore[misc]
    CLIENT_AUTH_METHODS = TOKEN_AUTH_METHODS

    @property
    def ctx(self) -> ProviderContext:
        return self.server.ctx  # type: ignore[no-any-return]

    def authenticate_token(self, request: OAuth2Request, client: Shop) -> TokenRecord | None:
        self.check_params(request, client)
        record = self.ctx.tokens.find_token(request.form["token"], request.form.get("token_type_hint"))
        # RFC 7009 §2.2: a token of another client is treated like an unknown one (200,
        # nothing revoked), so that a shop cannot probe another shop's tokens.
        if record is None or not record.check_client(client):
            return None
        return record

    def query_token(self, token_string: str, token_type_hint: str | None) -> TokenRecord | None:
        return self.ctx.tokens.find_token(token_string, token_type_hint)

    def revoke_token(self, token: TokenRecord, request: OAuth2Request) -> None:
        self.ctx.record("token_revoked", shop=token.client_id, person=token.person_id)
        self.ctx.tokens.revoke(token)


class GatewayIntrospectionEndpoint(IntrospectionEndpoint):  # type: ignore[misc]
    CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt"]

    @property
    def ctx(self) -> ProviderContext:
        return self.server.ctx  # type: ignore[no-any-return]

    def query_token(self, token_string: str, token_type_hint: str | None) -> TokenRecord | None:
        return self.ctx.tokens.find_token(token_string, token_type_hint)

    def check_permission(self, token: TokenRecord, client: Shop, request: OAuth2Request) -> bool:
        return token.check_client(client)  # a shop introspects only its own tokens

    def create_endpoint_response(self, request: OAuth2Request) -> Response:
        # authlib's own sequence (RFC 7662 §2.1), plus the audit event; the endpoint object
        # is shared by all requests, so the caller is kept in locals, never on self.
        client: Shop = self.authenticate_endpoint_client(request)
        token = self.authenticate_token(request, client)
        body: dict[str, Any] = self.create_introspection_payload(token)
        active = bool(body.get("active"))
        self.ctx.record("token_introspected", shop=client.client_id,
                        person=token.person_id if token is not None and active else None,
                        outcome="success" if active else "denied")
        return 200, body, list(JSON_HEADERS)

    def introspect_token(self, token: TokenRecord) -> dict[str, Any]:
        shop = self.ctx.shops.get(token.client_id)
        return {
            "active": True,
            "client_id": token.client_id,
            "scope": token.scope,
            "token_type": token_type(token),
            "sub": self.ctx.subject_for(shop, token.person_id) if shop else None,
            "aud": token.client_id,
            "iss": self.ctx.issuer,
            "exp": token.expires_at,
            "iat": token.issued_at,
            **({"cnf": {"jkt": token.jkt}} if token.jkt else {}),  # RFC 9449 §6.2
        }


def token_type(token: TokenRecord) -> str:
    """Introspection's ``token_type``: ``DPoP`` for a DPoP-bound access token (RFC 9449 §6.2)."""
    if token.kind != "access_token":
        return "refresh_token"
    return "DPoP" if token.jkt else "Bearer"


class GatewayEndSession(EndSessionEndpoint):  # type: ignore[misc]
    """RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0).

    Validation only: ending the browser session is done by the bridge, which holds the
    cookie; this class decides whether the request is trustworthy and where to go after.
    """

    @property
    def ctx(self) -> ProviderContext:
        return self.server.ctx  # type: ignore[no-any-return]

    def get_server_jwks(self) -> Any:
        return self.ctx.signing_keys.verification_keys()

    def get_algorithms(self) -> list[str]:
        return ["ES256", "RS256"]

    def end_session(self, end_session_request: Any) -> None:
        """The bridge ends the session; see the class docstring."""


# -- the server ------------------------------------------------------------------------


class ProviderServer(AuthorizationServer):  # type: ignore[misc]
    def __init__(self, ctx: ProviderContext) -> None:
        super().__init__(scopes_supported=list(SUPPORTED_SCOPES))
        self.ctx = ctx
        self.register_token_generator("default", BearerTokenGenerator(
            access_token_generator=lambda user, **_: ctx.tokens.new_credential(user.id),
            refresh_token_generator=lambda user, **_: ctx.tokens.new_credential(user.id),
            expires_generator=lambda client, grant_type: ctx.settings.access_token_ttl,
        ))
        self.register_client_auth_method("private_key_jwt", PrivateKeyJWT(ctx))
        self.register_grant(AuthorizationCodeGrant,
                            [S256CodeChallenge(required=True), GatewayOpenIDCode(ctx)])
        self.register_grant(RotatingRefreshTokenGrant)
        self.register_endpoint(GatewayRevocationEndpoint)
        self.register_endpoint(GatewayIntrospectionEndpoint)
        self.register_endpoint(GatewayEndSession)

    def query_client(self, client_id: str) -> Shop | None:
        return self.ctx.shops.get(client_id)

    def authenticate_client(self, request: OAuth2Request, methods: list[str],
                            endpoint: str = "token") -> Shop:
        """authlib's client authentication, plus: a ``client_id`` in the body must name the
        client that authenticated (RFC 6749 §2.3: one authentication method per request;
        HTTP Basic for one shop with a body naming another is a confused request)."""
        client: Shop = super().authenticate_client(request, methods, endpoint)
        named = request.payload.data.get("client_id")
        if named is not None and named != client.client_id:
            raise InvalidClientError(description="The client_id does not match the authenticated client.")
        return client

    def validate_requested_scope(self, scope: str | None) -> None:
        """Ignore scope values the gateway does not know rather than refuse the request.

        OIDC Core §3.1.2.1: "Scope values used that are not understood by an implementation
        SHOULD be ignored." Relying-party libraries commonly add ``offline_access`` (§11),
        ignored like any other. What a shop gets is still bounded by its configured scopes
        (:meth:`Shop.get_allowed_scope`) and policy, and a request without ``openid`` is
        still refused (:class:`AuthorizationCodeGrant`).
        """

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        """Use up the code or refresh token and store what it is exchanged for, in one
        script (gateway/store/grants.py); then record it, before the response leaves."""
        source = request.authorization_code or request.refresh_token
        # DPoP (RFC 9449 §5): access tokens bound to the proof's key; refresh tokens too for
        # public clients (a confidential client's are bound to its authentication already).
        jkt: str | None = getattr(request, "dpop_jkt", None)
        if jkt is not None:
            token["token_type"] = "DPoP"  # noqa: S105 - the RFC 9449 token type
        action: Action = "token_issued" if request.authorization_code else "token_refreshed"
        # Staged with the exchange, relayed right after: once the tokens are stored, the
        # shop gets them even if the log cannot take the event this instant (it is kept,
        # and the relay appends it); a 503 then would leave the shop a used-up token.
        event = stage(self.ctx.event(action, shop=request.client.client_id, person=request.user.id))
        presented = None if request.authorization_code else request.payload.data.get("refresh_token")
        outcome = self.ctx.tokens.exchange(source, token, event, access_jkt=jkt,
                                           refresh_jkt=jkt if request.client.config.is_public else None,
                                           presented=presented)
        if outcome is Exchange.REPEATED:
            log.info("refresh repeated within the repeat window: the same answer again",
                     extra={"client_id": request.client.client_id})
            return
        if outcome is not Exchange.DONE:
            log.info("grant refused at exchange", extra={"reason": outcome.name.lower(),
                                                         "client_id": request.client.client_id})
            raise InvalidGrantError()
        self.ctx.relay_staged(request.user.id)

    def create_oauth2_request(self, request: ProviderRequest) -> ProviderRequest:
        return request

    def create_token_response(self, request: ProviderRequest | None = None) -> Response:
        """authlib's token response, plus a fresh ``DPoP-Nonce`` for a request with a proof
        when nonces are required (RFC 9449 §8.2: the client uses it next time)."""
        status, body, headers = super().create_token_response(request)
        if (request is not None and self.ctx.settings.dpop_nonce_required
                and proof_headers(request.headers)
                and not any(name.lower() == "dpop-nonce" for name, _ in headers)):
            headers = [*headers, ("DPoP-Nonce", DPoPVerifier.for_context(self.ctx).nonce())]
        return status, body, headers

    def handle_response(self, status: int, body: Any, headers: list[tuple[str, str]]) -> Response:
        return status, body, list(headers)

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        """authlib's signals are not used; events are written where the work happens."""

