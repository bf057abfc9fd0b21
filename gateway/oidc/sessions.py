"""The person's sign-in session at the gateway, and authorization requests waiting for it.

The session cookie holds a random value; Redis holds the session under the value's digest.
A waiting authorization request is bound to the browser that started it (the ``browser``
cookie), so a link to someone else's pending request cannot be completed in another browser.
"""

from __future__ import annotations

import hmac
import json
import time
from dataclasses import asdict, dataclass, field

from gateway.oidc.tokens import digest, new_secret
from gateway.store import Store

SESSION_COOKIE = "__Host-cg_session"
BROWSER_COOKIE = "__Host-cg_browser"


@dataclass(slots=True)
class Person:
    """The signed-in person, as authlib's grants see ``request.user``."""

    id: str
    auth_time: int
    amr: list[str] = field(default_factory=list)
    provider: str = ""
    signed_in_at: float = 0.0  # precise time of the sign-in (auth_time is whole seconds)

    def get_user_id(self) -> str:
        return self.id


class LoginSessions:
    def __init__(self, store: Store, ttl: int) -> None:
        self._store = store
        self.ttl = ttl

    def start(self, person: Person) -> str:
        """Open a session; returns the cookie value."""
        session_id = new_secret()
        key = self._store.keys.login_session(digest(session_id))
        self._store.redis.set(key, json.dumps(asdict(person)), ex=self.ttl)
        return session_id

    def find(self, session_id: str | None) -> Person | None:
        if not session_id or len(session_id) > 128:
            return None
        raw = self._store.redis.get(self._store.keys.login_session(digest(session_id)))
        return Person(**json.loads(raw)) if raw else None

    def end(self, session_id: str | None) -> None:
        if session_id and len(session_id) <= 128:
            self._store.redis.delete(self._store.keys.login_session(digest(session_id)))


@dataclass(slots=True)
class PendingRequest:
    """An authorization request parked while the person signs in or decides on consent."""

    params: dict[str, str]
    browser: str
    created: float  # time.time(), to compare with sign-in and consent times in the same second

    @property
    def client_id(self) -> str:
        return self.params.get("client_id", "")


class PendingRequests:
    def __init__(self, store: Store, ttl: int) -> None:
        self._store = store
        self.ttl = ttl

    def park(self, params: dict[str, str], browser: str) -> str:
        request_id = new_secret()
        record = PendingRequest(params=params, browser=browser, created=time.time())
        key = self._store.keys.authorize_request(request_id)
        self._store.redis.set(key, json.dumps(asdict(record)), ex=self.ttl)
        return request_id

    def find(self, request_id: str | None, browser: str | None) -> PendingRequest | None:
        if not request_id or not browser or len(request_id) > 128:
            return None
        raw = self._store.redis.get(self._store.keys.authorize_request(request_id))
        if raw is None:
            return None
        record = PendingRequest(**json.loads(raw))
        # Only the browser that started the request may finish it.
        return record if hmac.compare_digest(record.browser, browser) else None

    def finish(self, request_id: str) -> None:
        self._store.redis.delete(self._store.keys.authorize_request(request_id))
