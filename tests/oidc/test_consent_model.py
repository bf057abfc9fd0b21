"""A stateful model of sign-in, consent, refresh, replay, withdrawal and erasure.

Hypothesis drives the real gateway app in process (``create_app`` with a real Redis, through
starlette's TestClient, as the ``make_client`` fixture builds it) with random sequences of:
signing in to one of two shops (new codes), redeeming codes, refreshing (rotation), replaying
used codes and refresh tokens, refreshing for a wider scope, withdrawing in the consent
centre (a whole shop, a purpose, or one optional or sensitive field) and erasing the person.
A small model keeps, for every token family, whether it is live (not replayed, issued under
the grant generation still current, for the person not erased) and the fields it asks for,
and per shop what the person consented to and withdrew.

After every step the invariant "a token works iff its grant is live and the person consented
to what it releases" is checked for every token ever issued: userinfo answers 200 iff the
access token's family is live, and then with exactly the consented fields among those the
token asks for (never more); introspection says ``active`` for a refresh token iff it is
unused and its family live (introspection does not use a refresh token up).

Each example gets a gateway of its own (a fresh key prefix under the test's, and its own
data directory), so examples, and hypothesis's replays while shrinking, never share state.
"""

from __future__ import annotations

import itertools
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx2 as httpx
import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.config import Settings
from gateway.store import Store
from tests.conftest import (
    DEFAULT_POLICY,
    ISSUER,
    Browser,
    ShopHandle,
    checkboxes,
    exchange_code,
    query_of,
    sign_in,
)
from tests.live import redis_for

SHOPS = ("shop-a", "shop-b")
PERSON = "li-lei"
SCOPES = ("openid profile email", "openid profile email phone", "openid phone")
# What the scopes ask for (gateway/policy/requests.py), among the fields DEFAULT_POLICY names.
SCOPE_FIELDS = {"profile": {"nickname", "avatar", "birthdate"}, "email": {"email"}, "phone": {"phone"}}
RULES = {r["field"]: r for r in DEFAULT_POLICY["fields"]}
PURPOSE_OF = {name: str(r["purpose"]) for name, r in RULES.items()}
SENSITIVE = {"phone"}  # in the catalogue (policies/catalogue.yaml)
# Fields withdrawn on their own in the consent centre: optional or sensitive ones.
SEPARATE = sorted(f for f, r in RULES.items() if not r.get("required") or f in SENSITIVE)
# The claim each field is released as, under DEFAULT_POLICY's transforms.
CLAIM_OF = {"nickname": "nickname", "avatar": "picture", "email": "email", "birthdate": "age_band",
            "phone": "phone_number"}
WITHDRAW_FORM = re.compile(r'<form method="post" action="/account/withdraw".*?</form>', re.S)
SHOP_HEADING = re.compile(r'<h2 id="shop-\d+">([^<]+)</h2>')


def fields_of(scope: str) -> frozenset[str]:
    return frozenset(f for s in scope.split() for f in SCOPE_FIELDS.get(s, ()))


def expected_ticks(asked: set[str]) -> set[tuple[str, str]]:
    """The checkboxes the consent screen shows for ``asked`` (gateway/web/consent_view.py):
    required ordinary fields are one tick per purpose, the others one tick each."""
    ticks = set()
    for name in asked:
        if RULES[name].get("required") and name not in SENSITIVE:
            ticks.add(("purpose", PURPOSE_OF[name]))
        else:
            ticks.add(("field", f"{PURPOSE_OF[name]}:{name}"))
    return ticks


# -- the model ---------------------------------------------------------------------------


@dataclass(eq=False)
class Family:
    """Everything issued from one authorization: its code, access and refresh tokens."""

    shop: str
    epoch: int  # which incarnation of the person (erasure starts a new one)
    generation: int  # the model's grant generation it was issued under
    fields: frozenset[str]  # policy fields the authorization asked for
    scope: str
    replayed: bool = False


@dataclass(eq=False)
class Code:
    value: str
    verifier: str
    family: Family
    used: bool = False

    def __repr__(self) -> str:
        return f"Code({self.family.shop}, {self.family.scope!r}, used={self.used})"


@dataclass(eq=False)
class RefreshToken:
    value: str
    family: Family
    used: bool = False
    seen_dead: bool = False

    def __repr__(self) -> str:
        return f"RefreshToken({self.family.shop}, used={self.used})"


@dataclass(eq=False)
class AccessToken:
    value: str
    family: Family
    seen_dead: bool = False


@dataclass
class ShopConsent:
    """The person's consent to one shop, as the model expects the gateway to hold it."""

    exists: bool = False
    consented: set[str] = field(default_factory=set)
    refused: set[str] = field(default_factory=set)  # withdrawn: not asked again
    withdrawn_all: bool = False
    families_indexed: bool = False  # the gateway's person-shop family index exists
    generation: int = 0


# -- one gateway per example ---------------------------------------------------------------


@dataclass
class GatewayFactory:
    shops: dict[str, ShopHandle]
    new_client: Callable[[], TestClient]


def server_errors(client: TestClient) -> list[Any]:
    registry = client.app.state.gateway.metrics.registry  # type: ignore[attr-defined]
    return [s for m in registry.collect() for s in m.samples
            if s.name.endswith("_total") and s.labels.get("status", "").startswith("5") and s.value]


@pytest.fixture
def gateways(make_shop: Callable[..., ShopHandle], make_settings: Callable[..., Settings],
             store: Store, redis_url: str, tmp_path: Path) -> Iterator[GatewayFactory]:
    """Two shops with the default test policy, and a factory of fresh gateways sharing them.

    Each gateway has its own key prefix nested under the ``store`` fixture's (which deletes
    them all afterwards) and its own data directory (the audit log's continuity file)."""
    shops = {client_id: make_shop(client_id) for client_id in SHOPS}
    redis = redis_for(redis_url)
    numbers = itertools.count()

    def new_client() -> TestClient:
        n = next(numbers)
        prefix = f"{store.keys.prefix}model{n}:"
        app = create_app(make_settings(redis_key_prefix=prefix, data_dir=tmp_path / f"data-{n}"),
                         store=Store(redis, prefix))
        return TestClient(app, base_url=ISSUER, follow_redirects=False, raise_server_exceptions=False)

    yield GatewayFactory(shops, new_client)  # each machine closes its client in teardown
    redis.close()


class ConsentModel(RuleBasedStateMachine):
    codes = Bundle("codes")
    refresh_tokens = Bundle("refresh_tokens")
    factory: GatewayFactory  # set by the test from the fixture (hypothesis builds the machine)

    def __init__(self) -> None:
        super().__init__()
        self.shops = self.factory.shops
        self.client = self.factory.new_client()
        self.browser = Browser(self.client)
        self.epoch = 0
        self.consent: dict[str, ShopConsent] = {s: ShopConsent() for s in SHOPS}
        self.access_tokens: list[AccessToken] = []
        self.all_refresh_tokens: list[RefreshToken] = []
        self.subjects: dict[tuple[int, str], str] = {}  # (epoch, shop) -> the pairwise sub

    # -- the model's view of liveness ----------------------------------------------------

    def live(self, family: Family) -> bool:
        return (not family.replayed and family.epoch == self.epoch
                and family.generation == self.consent[family.shop].generation)

    def end_generation(self, shop: str) -> None:
        self.consent[shop].generation += 1

    # -- HTTP helpers ----------------------------------------------------------------------

    def basic(self, shop: str) -> tuple[str, str]:
        handle = self.shops[shop]
        assert handle.secret
        return handle.client_id, handle.secret

    def token_request(self, shop: str, data: dict[str, str]) -> httpx.Response:
        return self.client.post("/token", data=data, auth=self.basic(shop))

    def userinfo(self, token: AccessToken) -> httpx.Response:
        return self.client.get("/userinfo", headers={"Authorization": f"Bearer {token.value}"})

    def introspect(self, token: RefreshToken | AccessToken) -> dict[str, Any]:
        hint = "refresh_token" if isinstance(token, RefreshToken) else "access_token"
        reply = self.client.post("/introspect", auth=self.basic(token.family.shop),
                                 data={"token": token.value, "token_type_hint": hint})
        assert reply.status_code == 200, reply.text
        body: dict[str, Any] = reply.json()
        return body

    def open_account(self) -> httpx.Response:
        """/account, signing in there first if the browser has no session."""
        page = self.browser.follow("/account")
        if "/upstream/demo/start" in page.text:
            start = re.search(r'href="(/upstream/demo/start\?[^"]+)"', page.text)
            assert start
            page = self.browser.follow(start.group(1).replace("&amp;", "&"))
            page = self.browser.submit(page, person=PERSON)
        assert page.status_code == 200 and str(page.url).endswith("/account"), page.text[:500]
        self.check_listing(page)
        return page

    def check_listing(self, page: httpx.Response) -> None:
        listed = set(SHOP_HEADING.findall(page.text))
        for shop, consent in self.consent.items():
            expected = bool(consent.consented) or (consent.families_indexed and not consent.withdrawn_all)
            assert (f"Shop {shop}" in listed) == expected, (
                f"/account {'lists' if not expected else 'does not list'} {shop}; model: {consent}")

    def confirm(self, action: str, fields: dict[str, str]) -> httpx.Response:
        """Post a consent-centre form, then confirm on the confirmation page."""
        page = self.browser.request("POST", action, content=urlencode(fields),
                                    headers={"content-type": "application/x-www-form-urlencoded"})
        assert page.status_code == 200 and 'name="confirm" value="yes"' in page.text, page.text[:500]
        return self.browser.submit(page, confirm="yes")

    def withdraw_form(self, page: httpx.Response, shop: str, **target: str) -> dict[str, str] | None:
        """The withdrawal form of ``shop`` for exactly ``target`` (purpose and/or field)."""
        wanted = {"shop": shop, **target}
        for form in WITHDRAW_FORM.findall(page.text):
            values = dict(re.findall(r'name="([^"]+)" value="([^"]*)"', form))
            if {k: v for k, v in values.items() if k != "csrf"} == wanted:
                return values
        return None

    def withdraw(self, shop: str, matched: set[str], *, everything: bool, **target: str) -> None:
        """Withdraw ``target`` at ``shop`` in the consent centre (``matched``: the fields it
        covers, by the model); a form the model says is not offered must be absent."""
        consent = self.consent[shop]
        page = self.open_account()
        form = self.withdraw_form(page, shop, **target)
        offered = bool(matched) if not everything else (
            bool(consent.consented) or (consent.families_indexed and not consent.withdrawn_all))
        assert (form is not None) == offered, f"withdrawal form for {shop} {target}: model {consent}"
        if form is None:
            return
        done = self.confirm("/account/withdraw", form)
        assert done.status_code == 200 and str(done.url).endswith("/account"), done.text[:500]
        # Any withdrawal ends every code and token the shop holds for the person.
        live = sum(self.live(t.family) for t in self.access_tokens if t.family.shop == shop)
        event(f"withdrawal ({'everything' if everything else 'partial'}), "
              f"{'live tokens' if live else 'no live tokens'}")
        self.end_generation(shop)
        consent.consented -= matched
        consent.refused |= matched
        consent.families_indexed = False
        if everything:
            consent.withdrawn_all = True
        self.check_listing(done)

    def any_consent(self) -> bool:
        return any(c.consented or c.families_indexed for c in self.consent.values())

    def any_live_token(self) -> bool:
        return any(self.live(t.family) for t in self.access_tokens)

    # -- rules ---------------------------------------------------------------------------

    @initialize(target=refresh_tokens)
    def signed_in_and_redeemed(self) -> RefreshToken:
        """Every run starts with one sign-in to shop-a, redeemed."""
        token = self.present_code(self.authorize(SHOPS[0], SCOPES[0]))
        assert token is not None
        return token

    @rule(target=codes, shop=st.sampled_from(SHOPS), scope=st.sampled_from(SCOPES),
          new_browser=st.booleans())
    def sign_in(self, shop: str, scope: str, new_browser: bool) -> Code:
        if new_browser:
            self.browser = Browser(self.client)
        return self.authorize(shop, scope)

    def authorize(self, shop: str, scope: str) -> Code:
        """/authorize → (demo sign-in) → consent screen if the model says so → a code."""
        consent = self.consent[shop]
        requested = set(fields_of(scope))
        if not consent.exists or consent.withdrawn_all:
            asked = requested  # nothing decided, or everything withdrawn: ask everything
            event(f"sign-in: asked everything ({'after full withdrawal' if consent.exists else 'first'})")
        else:
            asked = requested - consent.consented - consent.refused
            event(f"sign-in: {'asked what is new' if asked else 'no consent screen'}"
                  f"{', withdrawn fields not asked' if requested & consent.refused else ''}")
        seen = len(self.browser.pages)
        final, _, verifier = sign_in(self.browser, self.shops[shop], person=PERSON, scope=scope)
        screens = [p for p in self.browser.pages[seen:] if 'action="/consent"' in p.text]
        outcome = f"{final.status_code} {final.headers.get('location', final.text[:300])}"
        if asked:
            assert screens, f"no consent screen for {sorted(asked)} at {shop}; model {consent}; {outcome}"
            assert set(checkboxes(screens[0])) == expected_ticks(asked), (
                f"consent screen asks {checkboxes(screens[0])}, model expects {sorted(asked)}")
        else:
            assert not screens, f"consent screen shown again at {shop}; model {consent}"
        assert final.status_code == 302, outcome
        code = query_of(final.headers["location"]).get("code")
        assert code, final.headers["location"]
        consent.exists = True
        consent.withdrawn_all = False
        consent.consented |= asked  # the helper ticks every box
        consent.refused -= asked
        consent.families_indexed = True
        family = Family(shop, self.epoch, consent.generation, frozenset(requested), scope)
        return Code(code, verifier, family)

    def present_code(self, code: Code) -> RefreshToken | None:
        """Present ``code`` at /token: the first use of a live code gives tokens, anything
        else is invalid_grant, and a code used before ends what it issued."""
        reply = exchange_code(self.client, self.shops[code.family.shop], code.value, code.verifier)
        if code.used:
            assert reply.status_code == 400 and reply.json()["error"] == "invalid_grant", reply.text
            event(f"code replayed ({'live' if self.live(code.family) else 'dead'} family)")
            code.family.replayed = True
            return None
        if not self.live(code.family):
            assert reply.status_code == 400 and reply.json()["error"] == "invalid_grant", (
                f"a code of a dead grant was redeemed: {reply.text}")
            event("outstanding code of a dead grant refused")
            return None
        assert reply.status_code == 200, reply.text
        code.used = True
        return self.issued(code.family, reply.json())

    def issued(self, family: Family, body: dict[str, Any]) -> RefreshToken:
        assert set(body["scope"].split()) == set(family.scope.split()), body
        self.access_tokens.append(AccessToken(body["access_token"], family))
        token = RefreshToken(body["refresh_token"], family)
        self.all_refresh_tokens.append(token)
        return token

    def present_refresh_token(self, token: RefreshToken, scope: str | None = None) -> RefreshToken | None:
        data = {"grant_type": "refresh_token", "refresh_token": token.value}
        if scope is not None:
            data["scope"] = scope
        reply = self.token_request(token.family.shop, data)
        if token.used:  # a replay: the whole family ends
            assert reply.status_code == 400 and reply.json()["error"] == "invalid_grant", reply.text
            event(f"refresh token replayed ({'live' if self.live(token.family) else 'dead'} family)")
            token.family.replayed = True
            return None
        if not self.live(token.family):
            assert reply.status_code == 400 and reply.json()["error"] == "invalid_grant", (
                f"a refresh token of a dead grant refreshed: {reply.text}")
            event("refresh token of a dead grant refused")
            return None
        if scope is not None:  # wider than granted: refused, and the token is not used up
            assert reply.status_code == 400 and reply.json()["error"] == "invalid_scope", reply.text
            event("wider refresh refused, token kept")
            return None
        assert reply.status_code == 200, reply.text
        token.used = True
        return self.issued(token.family, reply.json())

    @rule(target=refresh_tokens, code=codes)
    def redeem(self, code: Code) -> Any:
        token = self.present_code(code)
        return token if token is not None else multiple()

    @rule(code=codes)
    def replay_code(self, code: Code) -> None:
        """Redeem ``code`` if it was not yet, then present it again."""
        if not code.used:
            self.present_code(code)
        if code.used:
            self.present_code(code)

    @rule(target=refresh_tokens, token=consumes(refresh_tokens))
    def refresh(self, token: RefreshToken) -> Any:
        """Refresh (rotation); a used token presented again is a replay. The used token stays
        in the bundle for a later replay; a dead one leaves it (the invariant still checks it)."""
        new = self.present_refresh_token(token)
        return multiple(new, token) if new is not None else multiple()

    @rule(token=consumes(refresh_tokens))
    def replay_refresh(self, token: RefreshToken) -> None:
        """Refresh with ``token`` if it was not used yet, then present it again."""
        if not token.used:
            self.present_refresh_token(token)
        if token.used:
            self.present_refresh_token(token)

    @rule(token=refresh_tokens)
    def refresh_wider_scope(self, token: RefreshToken) -> None:
        extra = "address" if "phone" in token.family.scope.split() else "phone"
        self.present_refresh_token(token, scope=f"{token.family.scope} {extra}")

    @precondition(any_consent)
    @rule(shop=st.sampled_from(SHOPS))
    def withdraw_all(self, shop: str) -> None:
        self.withdraw(shop, set(self.consent[shop].consented), everything=True)

    @precondition(any_consent)
    @rule(shop=st.sampled_from(SHOPS), purpose=st.sampled_from(sorted(set(PURPOSE_OF.values()))))
    def withdraw_purpose(self, shop: str, purpose: str) -> None:
        matched = {f for f in self.consent[shop].consented if PURPOSE_OF[f] == purpose}
        self.withdraw(shop, matched, everything=False, purpose=purpose)

    @precondition(any_consent)
    @rule(shop=st.sampled_from(SHOPS), name=st.sampled_from(SEPARATE))
    def withdraw_one_field(self, shop: str, name: str) -> None:
        matched = {name} & self.consent[shop].consented
        self.withdraw(shop, matched, everything=False, purpose=PURPOSE_OF[name], field=name)

    @precondition(any_live_token)
    @rule()
    def erase(self) -> None:
        page = self.open_account()
        csrf = re.search(r'<form method="post" action="/account/erase">\s*'
                         r'<input type="hidden" name="csrf" value="([^"]+)"', page.text)
        assert csrf, page.text[:500]
        done = self.confirm("/account/erase", {"csrf": csrf.group(1)})
        assert done.status_code == 200, done.text[:500]
        # Every token of every shop ends, and the next sign-in is a new person.
        self.epoch += 1
        self.consent = {s: ShopConsent(generation=c.generation) for s, c in self.consent.items()}

    # -- the invariant ---------------------------------------------------------------------

    @invariant()
    def tokens_work_iff_live_and_release_only_consented_fields(self) -> None:
        """Every token, after every step; a token seen dead once is dead for good in the model,
        so it is checked again only at the end of the run (teardown), to save requests."""
        self.check_tokens(everything=False)

    def check_tokens(self, *, everything: bool) -> None:
        for token in self.access_tokens:
            if everything or not token.seen_dead:
                self.check_access_token(token)
        for refresh in self.all_refresh_tokens:
            if everything or not refresh.seen_dead:
                self.check_refresh_token(refresh)

    def check_refresh_token(self, token: RefreshToken) -> None:
        active = bool(self.introspect(token).get("active"))
        expected = not token.used and self.live(token.family)
        assert active == expected, (
            f"introspection says active={active} for {token} of {token.family}, "
            f"model: live={self.live(token.family)}")
        token.seen_dead = not expected

    def check_access_token(self, token: AccessToken) -> None:
        family = token.family
        reply = self.userinfo(token)
        live = self.live(family)
        assert reply.status_code == (200 if live else 401), (
            f"userinfo {reply.status_code} for an access token of {family}, model: live={live}; "
            f"{reply.text[:300]}")
        active = bool(self.introspect(token).get("active"))
        assert active == live, f"introspection says active={active} for an access token of {family}"
        token.seen_dead = not live
        if not live:
            return
        claims = reply.json()
        consented = self.consent[family.shop].consented
        released = set(claims) - {"sub"}
        assert released <= {CLAIM_OF[f] for f in consented}, (
            f"userinfo released {sorted(released)}, consented only {sorted(consented)}")
        assert released == {CLAIM_OF[f] for f in family.fields & consented}, (
            f"userinfo released {sorted(released)}; asked {sorted(family.fields)}, "
            f"consented {sorted(consented)}")
        self.check_subject(family, claims["sub"])

    def check_subject(self, family: Family, sub: str) -> None:
        key = (family.epoch, family.shop)
        known = self.subjects.setdefault(key, sub)
        assert sub == known, f"the sub of {family.shop} changed within one person: {known} → {sub}"
        others = {s for k, s in self.subjects.items() if k != key}
        assert sub not in others, (
            f"sub {sub} of {key} is also another shop's or an erased person's: {self.subjects}")

    def teardown(self) -> None:
        try:
            # Hypothesis calls this in a ``finally``: after a failed step, report that step's error.
            if sys.exc_info()[0] is None:
                self.check_tokens(everything=True)  # nothing seen dead came back
                errors = server_errors(self.client)
                assert not errors, f"server errors during the example: {errors}"
        finally:
            self.client.close()


MODEL_SETTINGS = settings(max_examples=25, stateful_step_count=20, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])


def test_consent_model(gateways: GatewayFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ConsentModel, "factory", gateways, raising=False)
    run_state_machine_as_test(ConsentModel, settings=MODEL_SETTINGS)
