"""Issue 12: withdrawal and erasure leave nothing working, under real concurrency.

Real gateway processes (``gateway serve --workers 2``, tests/oidc/races.py) and threads,
HTTP only. Each race has a short default version (a few rounds, in the fast subset) and the
issue's full count marked ``slow``:

    pytest tests/oidc/test_races.py -m "not slow"   # the fast subset
    pytest tests/oidc/test_races.py -m slow         # the issue's counts

A credential "works" if userinfo answers anything but 401, introspection does not say
``{"active": false}``, or a refresh token refreshes (tests/oidc/races.py, ``still_working``).

Every test here fails on 079fbc4, where the issue measured the failures (the refresh-replay
race only in its slow version: it lost in about 1 round of 6 there).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import httpx2 as httpx
import pytest

from tests.conftest import Browser, authorize_params, pkce_pair
from tests.oidc.races import Deadline, LiveGateway, run_threads

FAMILIES = 8
THREADS = 20
FAST_BUDGET = 60.0
SLOW_BUDGET = 120.0


def rounds(fast: int, slow: int) -> Any:
    return pytest.mark.parametrize("count", [
        pytest.param(fast, id=f"{fast}-rounds"),
        pytest.param(slow, id=f"{slow}-rounds", marks=pytest.mark.slow),
    ])


def budget(count: int, fast: int) -> float:
    return FAST_BUDGET if count <= fast else SLOW_BUDGET


def no_server_errors(gateway: LiveGateway) -> None:
    errors = gateway.server_errors()
    assert not errors, f"{len(errors)} server errors during the test: {errors[:5]}"


def error_of(reply: httpx.Response) -> str | None:
    try:
        body = reply.json()
    except ValueError:
        return None
    return body.get("error") if isinstance(body, dict) else None


def ready_clients(gateway: LiveGateway, count: int) -> list[httpx.Client]:
    """One client per thread, each with its connection already open (so that a barrier
    releases requests, not TCP handshakes)."""
    clients = [gateway.new_client() for _ in range(count)]
    for client in clients:
        assert client.get("/healthz").status_code == 200
    return clients


# -- refreshing while the person withdraws or erases ------------------------------------


class RefreshRace:
    """Token families refreshing in a loop in threads while ``action`` runs in the test's.

    Every family has refreshed at least once before the action starts, and each sends at
    least one more refresh after the action's answer arrived. Every token issued on the
    way, including by refreshes in flight during the action, is kept for the checks.
    """

    def __init__(self, gateway: LiveGateway, families: list[dict[str, Any]], timeout: float) -> None:
        self.gateway = gateway
        self.families = families
        self.timeout = timeout
        self.issued_access = [tokens["access_token"] for tokens in families]
        self.issued_refresh = [tokens["refresh_token"] for tokens in families]
        self.late_successes = 0  # refreshes sent after the action's answer arrived that succeeded
        self.anomalies: list[str] = []
        self.answer: httpx.Response | None = None
        self.answered_at = float("inf")
        self.lock = threading.Lock()
        self.started = threading.Barrier(len(families) + 1, timeout=timeout)
        self.stop = threading.Event()
        self.clients = ready_clients(gateway, len(families))

    def loop(self, index: int) -> None:
        current = self.families[index]["refresh_token"]
        first = True
        while True:
            sent = time.monotonic()
            reply = self.gateway.refresh(current, client=self.clients[index])
            if reply.status_code == 200:
                body = reply.json()
                with self.lock:
                    self.issued_access.append(body["access_token"])
                    self.issued_refresh.append(body["refresh_token"])
                    if sent > self.answered_at:
                        self.late_successes += 1
                current = body["refresh_token"]
            else:
                if first or error_of(reply) != "invalid_grant" or reply.status_code != 400:
                    with self.lock:
                        self.anomalies.append(f"family {index}: refresh answered {reply.status_code} "
                                              f"{reply.text[:200]}")
                if first:
                    self.started.abort()
                return  # the chain ended
            if first:
                first = False
                self.started.wait()
            if self.stop.is_set() and sent > self.answered_at:
                return

    def run(self, action: Callable[[], httpx.Response]) -> RefreshRace:
        failures: list[BaseException] = []

        def loops() -> None:
            try:
                run_threads(len(self.families), self.loop, self.timeout)
            except BaseException as error:  # noqa: BLE001 - reported below
                failures.append(error)

        workers = threading.Thread(target=loops, daemon=True)
        workers.start()
        try:
            try:
                self.started.wait()
            except threading.BrokenBarrierError:
                raise AssertionError(f"the refresh loops did not get going: {self.anomalies}") from None
            self.answer = action()
            self.answered_at = time.monotonic()
        finally:
            self.answered_at = min(self.answered_at, time.monotonic())
            self.stop.set()
            workers.join(self.timeout)
            for client in self.clients:
                client.close()
        assert not workers.is_alive(), f"the refresh loops did not stop within {self.timeout:.0f} s"
        if failures:
            raise failures[0]
        return self


def families_of(gateway: LiveGateway, browser: Browser, count: int = FAMILIES) -> list[dict[str, Any]]:
    """``count`` token families for the same person and shop, each from its own code."""
    return [gateway.tokens(browser) for _ in range(count)]


def summarise(problems: dict[int, list[str]], count: int, what: str) -> str:
    total = sum(len(p) for p in problems.values())
    first = next(iter(problems.items()))
    return (f"{what} in {len(problems)} of {count} rounds ({total} in all); "
            f"round {first[0]}: {first[1][:6]}")


@rounds(fast=3, slow=50)
def test_withdrawal_while_families_refresh_leaves_no_token_working(racing_gateway: LiveGateway,
                                                                   count: int) -> None:
    gateway = racing_gateway
    deadline = Deadline(budget(count, 3), "withdrawal racing refreshes")
    browser = gateway.browser()
    problems: dict[int, list[str]] = {}
    for round_ in range(count):
        deadline.check(f"(after {round_} of {count} rounds)")
        families = families_of(gateway, browser)
        race = RefreshRace(gateway, families, timeout=max(5.0, deadline.left)).run(
            lambda: gateway.withdraw_shop(browser))
        assert race.answer is not None and race.answer.status_code == 303, (
            f"withdrawal did not succeed: {race.answer and race.answer.status_code}")
        found = list(race.anomalies)
        found += gateway.still_working(race.issued_access, race.issued_refresh)
        if race.late_successes:
            found.append(f"{race.late_successes} refreshes sent after the withdrawal answered succeeded")
        if found:
            problems[round_] = found
    assert not problems, summarise(problems, count, "credentials still worked after withdrawal")
    no_server_errors(gateway)


@rounds(fast=1, slow=10)
def test_erasure_while_families_refresh_leaves_no_token_working_and_a_new_subject(
    racing_gateway: LiveGateway, count: int
) -> None:
    gateway = racing_gateway
    deadline = Deadline(budget(count, 1), "erasure racing refreshes")
    problems: dict[int, list[str]] = {}
    for round_ in range(count):
        deadline.check(f"(after {round_} of {count} rounds)")
        browser = gateway.browser()
        families = families_of(gateway, browser)
        before = gateway.userinfo(families[0]["access_token"])
        assert before.status_code == 200, before.text
        race = RefreshRace(gateway, families, timeout=max(5.0, deadline.left)).run(
            functools.partial(gateway.erase, browser))
        assert race.answer is not None and race.answer.status_code == 200, (
            f"erasure did not succeed: {race.answer and race.answer.status_code}")
        found = list(race.anomalies)
        found += gateway.still_working(race.issued_access, race.issued_refresh)
        if race.late_successes:
            found.append(f"{race.late_successes} refreshes sent after the erasure answered succeeded")
        # The same demo person signing in again is a new person to the gateway and the shop.
        again = gateway.tokens(browser)
        after = gateway.userinfo(again["access_token"])
        assert after.status_code == 200, f"a new sign-in after erasure does not work: {after.text}"
        if after.json()["sub"] == before.json()["sub"]:
            found.append(f"the same sub {before.json()['sub']} after erasure")
        if found:
            problems[round_] = found
    assert not problems, summarise(problems, count, "after erasure, something still worked")
    no_server_errors(gateway)


# -- one code or refresh token, twenty shops at once -------------------------------------


@rounds(fast=3, slow=50)
def test_twenty_redemptions_of_one_code_one_winner_and_the_family_dies(racing_gateway: LiveGateway,
                                                                         count: int) -> None:
    gateway = racing_gateway
    deadline = Deadline(budget(count, 3), "code redemption race")
    browser = gateway.browser()
    clients = ready_clients(gateway, THREADS)
    problems: dict[int, list[str]] = {}
    for round_ in range(count):
        deadline.check(f"(after {round_} of {count} rounds)")
        code, verifier = gateway.code(browser)
        replies: list[httpx.Response | None] = [None] * THREADS
        barrier = threading.Barrier(THREADS, timeout=30)

        def redeem(index: int, code: str = code, verifier: str = verifier,
                   barrier: threading.Barrier = barrier,
                   replies: list[httpx.Response | None] = replies) -> None:
            barrier.wait()
            replies[index] = gateway.redeem(code, verifier, client=clients[index])

        run_threads(THREADS, redeem, timeout=max(5.0, deadline.left))
        found = check_one_winner(gateway, [r for r in replies if r is not None])
        if found:
            problems[round_] = found
    assert not problems, summarise(problems, count, "a code redeemed by 20 at once went wrong")
    no_server_errors(gateway)


@rounds(fast=3, slow=50)
def test_twenty_refreshes_with_one_token_one_winner_and_the_family_dies(racing_gateway: LiveGateway,
                                                                          count: int) -> None:
    gateway = racing_gateway
    deadline = Deadline(budget(count, 3), "refresh replay race")
    browser = gateway.browser()
    clients = ready_clients(gateway, THREADS)
    problems: dict[int, list[str]] = {}
    for round_ in range(count):
        deadline.check(f"(after {round_} of {count} rounds)")
        tokens = gateway.tokens(browser)
        replies: list[httpx.Response | None] = [None] * THREADS
        barrier = threading.Barrier(THREADS, timeout=30)

        def refresh(index: int, token: str = tokens["refresh_token"], barrier: threading.Barrier = barrier,
                    replies: list[httpx.Response | None] = replies) -> None:
            barrier.wait()
            replies[index] = gateway.refresh(token, client=clients[index])

        run_threads(THREADS, refresh, timeout=max(5.0, deadline.left))
        found = check_one_winner(gateway, [r for r in replies if r is not None], original=tokens)
        if found:
            problems[round_] = found
    assert not problems, summarise(problems, count, "a refresh token used by 20 at once went wrong")
    no_server_errors(gateway)


def check_one_winner(gateway: LiveGateway, replies: list[httpx.Response],
                     original: dict[str, Any] | None = None) -> list[str]:
    """Exactly one 200, every other answer invalid_grant, and, once all have answered,
    nothing of the family works: the replays killed it, the winner's tokens included."""
    found = []
    if len(replies) != THREADS:
        found.append(f"only {len(replies)} of {THREADS} requests answered")
    winners = [r for r in replies if r.status_code == 200]
    others = [f"{r.status_code} {error_of(r)}" for r in replies
              if r.status_code != 200 and not (r.status_code == 400 and error_of(r) == "invalid_grant")]
    if len(winners) != 1:
        found.append(f"{len(winners)} winners instead of 1")
    if others:
        found.append(f"answers other than invalid_grant: {others}")
    access = [w.json()["access_token"] for w in winners]
    refresh = [w.json()["refresh_token"] for w in winners]
    if original is not None:
        access.insert(0, original["access_token"])
        refresh.insert(0, original["refresh_token"])
    found += gateway.still_working(access, refresh)
    return found


# -- outstanding codes, wider scopes, asking again ---------------------------------------


def test_an_outstanding_code_is_refused_after_withdrawal(racing_gateway: LiveGateway) -> None:
    gateway = racing_gateway
    browser = gateway.browser()
    gateway.tokens(browser)  # the shop is in use: the consent centre lists it
    code, verifier = gateway.code(browser)
    assert gateway.withdraw_shop(browser).status_code == 303
    reply = gateway.redeem(code, verifier)
    assert reply.status_code == 400 and error_of(reply) == "invalid_grant", (
        f"a code issued before the withdrawal still redeems: {reply.status_code} "
        f"{outstanding_tokens(gateway, reply)}")
    no_server_errors(gateway)


def test_an_outstanding_code_is_refused_after_erasure(racing_gateway: LiveGateway) -> None:
    gateway = racing_gateway
    browser = gateway.browser()
    code, verifier = gateway.code(browser)
    assert gateway.erase(browser).status_code == 200
    reply = gateway.redeem(code, verifier)
    assert reply.status_code == 400 and error_of(reply) == "invalid_grant", (
        f"a code issued before the erasure still redeems: {reply.status_code} "
        f"{outstanding_tokens(gateway, reply)}")
    no_server_errors(gateway)


def outstanding_tokens(gateway: LiveGateway, reply: httpx.Response) -> str:
    if reply.status_code != 200:
        return reply.text[:200]
    body = reply.json()
    alive = gateway.still_working([body["access_token"]], [body["refresh_token"]])
    return f"and its tokens: {alive or 'dead'}"


def test_a_refresh_asking_for_a_wider_scope_uses_nothing_up(racing_gateway: LiveGateway) -> None:
    gateway = racing_gateway
    tokens = gateway.tokens(gateway.browser())  # scope "openid profile email"
    wider = gateway.refresh(tokens["refresh_token"], scope="openid profile email phone")
    assert wider.status_code == 400 and error_of(wider) == "invalid_scope", (wider.status_code, wider.text)
    # Not consumed and no family kill: the access token still works, and so does the refresh token.
    assert gateway.introspect(tokens["access_token"])["active"] is True, (
        "the access token died after a refused refresh: the family was killed")
    assert gateway.userinfo(tokens["access_token"]).status_code == 200
    retry = gateway.refresh(tokens["refresh_token"])
    assert retry.status_code == 200, (
        f"the refresh token was used up by a refused refresh: {retry.status_code} {retry.text}")
    assert gateway.userinfo(retry.json()["access_token"]).status_code == 200
    assert gateway.introspect(retry.json()["refresh_token"])["active"] is True
    no_server_errors(gateway)


def test_after_a_full_withdrawal_the_shop_asks_again_and_is_no_longer_listed(
    racing_gateway: LiveGateway
) -> None:
    gateway = racing_gateway
    browser = gateway.browser()
    gateway.tokens(browser)
    assert gateway.lists_shop(gateway.account(browser))
    assert gateway.withdraw_shop(browser).status_code == 303
    page = gateway.account(browser)
    assert not gateway.lists_shop(page), "the consent centre still lists the shop after a full withdrawal"
    _, challenge = pkce_pair()
    again = browser.follow(f"/authorize?{urlencode(authorize_params(gateway.shop, challenge))}")
    assert again.status_code != 302 or not again.headers["location"].startswith(gateway.shop.redirect_uri), (
        f"authorize went back to the shop without asking again: {again.headers['location'][:120]}")
    assert again.status_code == 200 and 'action="/consent"' in again.text, (
        f"no consent screen after a full withdrawal: {again.status_code} {again.text[:300]}")
    no_server_errors(gateway)
