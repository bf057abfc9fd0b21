"""Factories for the encryption tests: a master key, a sealed key ring, an envelope, and a
way to count the Redis commands an operation sends."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.store import Store
from gateway.vault import Envelope, KeyRing, MasterKey


@pytest.fixture
def master() -> MasterKey:
    return MasterKey(secrets.token_bytes(32))


@pytest.fixture
def ring_dir(tmp_path: Path) -> Path:
    return tmp_path / "keys"


@pytest.fixture
def ring(ring_dir: Path, master: MasterKey) -> KeyRing:
    return KeyRing.init(ring_dir, master)


@pytest.fixture
def make_envelope(store: Store, ring: KeyRing) -> Callable[..., Envelope]:
    def make(**options: Any) -> Envelope:
        return Envelope(store, options.pop("ring", ring), **options)

    return make


@pytest.fixture
def envelope(make_envelope: Callable[..., Envelope]) -> Envelope:
    return make_envelope()


class CommandCounter:
    """Counts commands sent through the store's client (each one is a round trip)."""

    def __init__(self) -> None:
        self.commands: list[str] = []

    def __len__(self) -> int:
        return len(self.commands)

    def reset(self) -> None:
        self.commands.clear()


@pytest.fixture
def redis_commands(store: Store, monkeypatch: pytest.MonkeyPatch) -> Iterator[CommandCounter]:
    counter = CommandCounter()
    original: Callable[..., Any] = store.redis.execute_command

    def counting(*args: Any, **options: Any) -> Any:
        counter.commands.append(str(args[0]))
        return original(*args, **options)

    monkeypatch.setattr(store.redis, "execute_command", counting)
    yield counter
