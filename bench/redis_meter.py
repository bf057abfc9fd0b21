"""Counting what the servers ask of Redis.

Two measures, because the Redis server is shared with other users of the machine:

- **Exact, per server: a counting proxy.** During the accounting phase each server talks to
  Redis through :class:`CountingProxy`, a TCP relay in this process that parses the RESP
  requests it forwards. It counts commands by name and *round trips*: a round trip starts when
  a connection sends after it last received (the client had to wait for an answer before it
  could go on). A pipeline or a MULTI…EXEC sent in one write is one round trip however many
  commands it holds; a Lua script (EVALSHA) is one command and one round trip, and the
  commands it runs inside Redis are not seen. Requests are sent one at a time in that phase,
  so the counts divide exactly by the number of requests; round trips identical to those an
  idle server makes on its own (background polling) are counted apart. The relay costs
  latency, which is why the timed cells do not use it.
- **Server-wide, per timed cell: ``INFO commandstats`` deltas.** These include the commands
  Lua scripts run, but also every other client of the shared server (other engineers' test
  suites), so they are an upper bound and noisy.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import redis

Command = tuple[str, str]  # (name, first argument: usually the key)


class RespCommandParser:
    """Incremental parser of a client's RESP stream; yields (command name, first argument)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Command]:
        self._buffer += data
        commands: list[Command] = []
        position = 0
        while True:
            parsed = self._one(position)
            if parsed is None:
                break
            command, position = parsed
            commands.append(command)
        del self._buffer[:position]
        return commands

    def _one(self, position: int) -> tuple[Command, int] | None:
        buffer = self._buffer
        if position >= len(buffer):
            return None
        end = buffer.find(b"\r\n", position)
        if end < 0:
            return None
        if buffer[position] != ord("*"):  # an inline command: one line
            words = [w.decode(errors="replace") for w in bytes(buffer[position:end]).split()]
            return ((words[0].upper() if words else ""), words[1] if len(words) > 1 else ""), end + 2
        count = int(buffer[position + 1:end])
        position, words = end + 2, []
        for index in range(count):
            end = buffer.find(b"\r\n", position)
            if end < 0:
                return None
            length = int(buffer[position + 1:end])
            start, stop = end + 2, end + 2 + length
            if stop + 2 > len(buffer):
                return None
            if index < 2:
                words.append(bytes(buffer[start:stop]).decode(errors="replace"))
            position = stop + 2
        name = words[0].upper() if words else ""
        return (name, words[1] if len(words) > 1 else ""), position


@dataclass(slots=True)
class TrafficCounts:
    round_trips: int = 0
    commands: Counter[str] = field(default_factory=Counter)
    background_round_trips: int = 0  # left out: they matched the idle server's own traffic

    def copy(self) -> TrafficCounts:
        return TrafficCounts(self.round_trips, Counter(self.commands), self.background_round_trips)

    def minus(self, earlier: TrafficCounts) -> TrafficCounts:
        change = Counter(self.commands)
        change.subtract(earlier.commands)
        return TrafficCounts(self.round_trips - earlier.round_trips, +change,
                             self.background_round_trips - earlier.background_round_trips)

    def add(self, other: TrafficCounts) -> None:
        self.round_trips += other.round_trips
        self.commands.update(other.commands)
        self.background_round_trips += other.background_round_trips

    @property
    def total_commands(self) -> int:
        return sum(self.commands.values())


class CountingProxy:
    """A TCP relay to Redis that counts the commands and round trips passing through it.

    A round trip is complete when the server's first reply bytes come back after the client
    wrote; it is then counted with every command it carried. Servers poll Redis on their own
    (the gateway's audit checkpointer reads the log size every second): :meth:`learn_background`
    watches an idle server and remembers the exact round trips it makes (commands and keys);
    identical round trips later are counted apart as background, not charged to requests.
    """

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.counts = TrafficCounts()
        self.background: set[tuple[Command, ...]] = set()
        self._learning: set[tuple[Command, ...]] | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    def snapshot(self) -> TrafficCounts:
        return self.counts.copy()

    async def learn_background(self, seconds: float) -> set[tuple[Command, ...]]:
        """Record the round trips the servers make on their own while nothing is asked of them."""
        self._learning = set()
        await asyncio.sleep(seconds)
        learned, self._learning = self._learning, None
        self.background |= learned
        return learned

    def _finish(self, round_trip: list[Command]) -> None:
        signature = tuple(round_trip)
        if self._learning is not None:
            self._learning.add(signature)
        if signature in self.background:
            self.counts.background_round_trips += 1
            return
        self.counts.round_trips += 1
        self.counts.commands.update(name for name, _ in round_trip)

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection(*self.upstream)
        pending: list[Command] = []  # the commands of the round trip in flight on this connection
        parser = RespCommandParser()

        async def requests() -> None:
            while data := await client_reader.read(65536):
                pending.extend(parser.feed(data))
                server_writer.write(data)
                await server_writer.drain()

        async def replies() -> None:
            while data := await server_reader.read(65536):
                if pending:
                    self._finish(list(pending))
                    pending.clear()
                client_writer.write(data)
                await client_writer.drain()

        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            pumps = [asyncio.ensure_future(requests()), asyncio.ensure_future(replies())]
            _, unfinished = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            for pump in unfinished:
                pump.cancel()
        except (ConnectionError, OSError):
            pass
        finally:
            for writer in (server_writer, client_writer):
                writer.close()
            if task is not None:
                self._tasks.discard(task)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), timeout=2)
            self._server = None


# -- server-wide statistics -------------------------------------------------------------


def commandstats(client: redis.Redis) -> Counter[str]:
    """Calls per command since the server started (``INFO commandstats``)."""
    info: dict[str, Any] = client.info("commandstats")
    return Counter({name.removeprefix("cmdstat_").upper(): int(stats["calls"])
                    for name, stats in info.items() if isinstance(stats, dict)})


def redis_cpu_seconds(client: redis.Redis) -> float:
    info: dict[str, Any] = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def delta(after: Counter[str], before: Counter[str]) -> Counter[str]:
    result = Counter(after)
    result.subtract(before)
    return +result


def memory_usage(client: redis.Redis, keys: list[str]) -> dict[str, int]:
    """``MEMORY USAGE key SAMPLES 0`` (every element counted) of each existing key."""
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.memory_usage(key, samples=0)
    return {key: int(size) for key, size in zip(keys, pipe.execute(), strict=True) if size is not None}


def scan_keys(client: redis.Redis, pattern: str) -> list[str]:
    return [k.decode() if isinstance(k, bytes) else str(k)
            for k in client.scan_iter(match=pattern, count=1000)]


def escape_pattern(text: str) -> str:
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


def delete_prefix(client: redis.Redis, prefix: str) -> int:
    """Remove every key under ``prefix`` (this run's keys only); returns how many."""
    removed = 0
    batch: list[str] = []
    for key in client.scan_iter(match=f"{escape_pattern(prefix)}*", count=1000):
        batch.append(key.decode() if isinstance(key, bytes) else str(key))
        if len(batch) >= 500:
            removed += int(client.unlink(*batch))
            batch.clear()
    if batch:
        removed += int(client.unlink(*batch))
    return removed
