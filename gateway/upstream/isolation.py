"""Keeping one bad provider from stalling anything else (docs/providers.md, "Slow providers").

Three small mechanisms, one set per provider:

- :class:`CallLimit`: at most N calls to the provider in progress in this process; one more
  fails at once (:class:`ProviderUnavailableError`) instead of queuing behind the others.
- :class:`CircuitBreaker`: after N consecutive failed calls (timeouts, connection errors,
  5xx) the provider is not called for a cool-down; then one trial call is let through
  (half-open): its success closes the circuit, its failure opens it again.
- :class:`SharedFetch`: a document every sign-in needs (OIDC discovery, JWKS), cached; its
  failure is remembered briefly (a dead provider is asked once per ``failure_ttl``, not once
  per request), and concurrent requests for a missing document share one fetch in flight
  (single-flight) instead of each making its own or queuing behind a lock.

No lock here is ever held across network I/O: the locks guard a few counters and are
released before any ``await``. Everything is per process; several gateway processes each
keep their own (a provider failing for one fails for all soon enough).

The counters are plain attributes behind a ``threading.Lock`` rather than asyncio
primitives, because the connectors may be driven from more than one event loop (the
test client runs each request on a loop of its own) and fail-fast admission needs no
waiting anyway.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from gateway.upstream.base import ProviderUnavailableError, UpstreamError

log = logging.getLogger(__name__)

T = TypeVar("T")


class CallLimit:
    """At most ``limit`` calls in progress; :meth:`try_acquire` never waits."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._in_progress = 0
        self._lock = threading.Lock()

    @property
    def in_progress(self) -> int:
        return self._in_progress

    def try_acquire(self) -> bool:
        with self._lock:
            if self._in_progress >= self.limit:
                return False
            self._in_progress += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._in_progress -= 1


class CircuitState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"  # the cool-down is over and one trial call is in flight


class Admission:
    """One call let through by a :class:`CircuitBreaker`; report how it went exactly once."""

    __slots__ = ("_breaker", "_done", "trial")

    def __init__(self, breaker: CircuitBreaker, trial: bool) -> None:
        self._breaker = breaker
        self.trial = trial
        self._done = False

    def succeeded(self) -> None:
        self._finish(True)

    def failed(self) -> None:
        self._finish(False)

    def abandoned(self) -> None:
        """The call never reached an outcome (cancelled, or refused before it was sent)."""
        self._finish(None)

    def _finish(self, outcome: bool | None) -> None:
        if not self._done:
            self._done = True
            self._breaker._record(self, outcome)


class CircuitBreaker:
    """Consecutive failures open the circuit for ``cooldown`` seconds; then one trial."""

    def __init__(self, name: str, *, failures: int, cooldown: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.failures = failures
        self.cooldown = cooldown
        self._clock = clock
        self._lock = threading.Lock()
        self._state = CircuitState.CLOSED
        self._consecutive = 0
        self._opened_at = 0.0

    @property
    def state(self) -> CircuitState:
        with self._lock:
            return self._state

    def is_open(self) -> bool:
        """True while calls are refused: in the cool-down, or while the trial is out."""
        with self._lock:
            if self._state is CircuitState.OPEN:
                return self._clock() - self._opened_at < self.cooldown
            return self._state is CircuitState.HALF_OPEN

    def retry_after(self) -> float:
        """Seconds until a trial call may go (0 when the circuit is closed)."""
        with self._lock:
            if self._state is not CircuitState.OPEN:
                return 0.0
            return max(0.0, self.cooldown - (self._clock() - self._opened_at))

    def admit(self, what: str) -> Admission:
        """Let one call through, or raise ProviderUnavailableError at once."""
        with self._lock:
            if self._state is CircuitState.CLOSED:
                return Admission(self, trial=False)
            if self._state is CircuitState.OPEN and self._clock() - self._opened_at >= self.cooldown:
                self._state = CircuitState.HALF_OPEN
                trial = True
            else:
                trial = False
        if trial:
            log.info("provider circuit half-open: one trial call", extra={"provider": self.name})
            return Admission(self, trial=True)
        raise ProviderUnavailableError(f"{what}: not called, circuit open after repeated failures")

    def _record(self, admission: Admission, outcome: bool | None) -> None:
        opened = closed = False
        with self._lock:
            if admission.trial:
                if outcome is True:
                    self._state, self._consecutive, closed = CircuitState.CLOSED, 0, True
                elif outcome is False:
                    self._state, self._opened_at, opened = CircuitState.OPEN, self._clock(), True
                else:  # no verdict: the next call may be the trial at once
                    self._state, self._opened_at = CircuitState.OPEN, self._clock() - self.cooldown
            elif self._state is CircuitState.CLOSED:
                # Calls admitted before the circuit opened and ending after it are ignored:
                # only the trial decides how an open circuit closes.
                if outcome is True:
                    self._consecutive = 0
                elif outcome is False:
                    self._consecutive += 1
                    if self._consecutive >= self.failures:
                        self._state, self._opened_at, opened = CircuitState.OPEN, self._clock(), True
        if opened:
            log.warning("provider circuit open: not called for a while",
                        extra={"provider": self.name, "seconds": self.cooldown})
        if closed:
            log.info("provider circuit closed: the trial call succeeded", extra={"provider": self.name})


class SharedFetch(Generic[T]):
    """A provider document: cached ``ttl`` seconds, a failure remembered ``failure_ttl``
    seconds, one fetch in flight at a time shared by everyone who needs it meanwhile.

    The fetch runs as a task of its own: a request that gives up (its client left) does not
    cancel it for the others, and the fetch itself is bounded by the call deadline.
    """

    def __init__(self, what: str, *, ttl: float, failure_ttl: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.what = what
        self.ttl = ttl
        self.failure_ttl = failure_ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._value: tuple[float, T] | None = None
        self._failure: tuple[float, UpstreamError] | None = None
        self._in_flight: dict[asyncio.AbstractEventLoop, asyncio.Task[T]] = {}

    def fresh(self) -> T | None:
        with self._lock:
            if self._value is not None and self._clock() - self._value[0] < self.ttl:
                return self._value[1]
            return None

    def failing(self) -> bool:
        """Whether the last fetch failed less than ``failure_ttl`` seconds ago."""
        with self._lock:
            return self._remembered_failure() is not None

    def _remembered_failure(self) -> UpstreamError | None:
        if self._failure is not None and self._clock() - self._failure[0] < self.failure_ttl:
            return self._failure[1]
        return None

    async def get(self, fetch: Callable[[], Awaitable[T]], *, refresh: bool = False) -> T:
        """The cached value, or the shared fetch's; raises UpstreamError (a copy of it
        while a failure is remembered, without calling the provider)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if not refresh and self._value is not None and self._clock() - self._value[0] < self.ttl:
                return self._value[1]
            failure = self._remembered_failure()
            if failure is not None:
                ago = self._clock() - self._failure[0] if self._failure else 0.0
                raise ProviderUnavailableError(
                    f"{failure.reason} ({ago:.0f} s ago; not asked again for "
                    f"{self.failure_ttl:g} s)")
            task = self._in_flight.get(loop)
            if task is None:
                task = loop.create_task(self._run(fetch, loop))
                task.add_done_callback(_retrieve)
                self._in_flight[loop] = task
        try:
            return await asyncio.shield(task)
        except UpstreamError as error:
            raise error.again() from None

    async def _run(self, fetch: Callable[[], Awaitable[T]], loop: asyncio.AbstractEventLoop) -> T:
        try:
            value = await fetch()
        except UpstreamError as error:
            with self._lock:
                self._failure = (self._clock(), error)
            log.warning("provider document failed; remembered briefly",
                        extra={"what": self.what, "reason": error.reason, "seconds": self.failure_ttl})
            raise
        else:
            with self._lock:
                self._value, self._failure = (self._clock(), value), None
            return value
        finally:
            with self._lock:
                self._in_flight.pop(loop, None)


def _retrieve(task: asyncio.Task[T]) -> None:
    """Mark a shared fetch's exception as seen, even when every waiter had given up."""
    if not task.cancelled():
        task.exception()
