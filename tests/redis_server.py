"""Throwaway redis-server processes for the tests that stop, kill or empty Redis.

Each one runs Debian's ``redis-server`` on a free loopback port with its own directory and
is stopped by PID; the shared server the rest of the suite uses is never touched
(../shared/testing-faults.md).
"""

from __future__ import annotations

import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import redis

from tests.live import free_port

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


@dataclass
class RedisServer:
    directory: Path
    persistent: bool = True
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    extra_args: list[str] = field(default_factory=list)  # e.g. --replicaof

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else [
            "--appendonly", "no"]
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
             "--save", "", *persistence, "--daemonize", "no", "--logfile", str(self.directory / "log"),
             *self.extra_args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        try:
            while True:
                try:
                    if client.ping():
                        return self
                except redis.RedisError:
                    if time.monotonic() > deadline or self.process.poll() is not None:
                        raise RuntimeError("redis-server did not start") from None
                    time.sleep(0.05)
        finally:
            client.close()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def wipe(self) -> None:
        """Kill the server and delete its files: it comes back empty."""
        self.kill()
        shutil.rmtree(self.directory, ignore_errors=True)

    def restart(self) -> RedisServer:
        self.kill()
        return self.start()


@dataclass
class SentinelGroup:
    """One primary, one replica and three Sentinels on loopback (../shared/testing-faults.md)."""

    directory: Path
    master_name: str = "cgmaster"
    primary: RedisServer | None = None
    replica: RedisServer | None = None
    sentinel_ports: list[int] = field(default_factory=list)
    sentinels: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{port}" for port in self.sentinel_ports]

    def start(self, timeout: float = 30.0) -> SentinelGroup:
        try:
            return self._start(timeout)
        except BaseException:
            self.stop()  # nothing left running when the set-up fails half-way
            raise

    def _start(self, timeout: float) -> SentinelGroup:
        self.primary = RedisServer(self.directory / "primary").start()
        self.replica = RedisServer(self.directory / "replica", extra_args=[
            "--replicaof", "127.0.0.1", str(self.primary.port)]).start()
        deadline = time.monotonic() + timeout
        _wait(lambda: _info(self.replica, "replication").get("master_link_status") == "up", deadline)
        for index in range(3):
            port = free_port()
            conf = self.directory / f"sentinel-{index}.conf"  # a sentinel rewrites its own file
            conf.write_text(f"port {port}\nbind 127.0.0.1\n"
                            f"sentinel monitor {self.master_name} 127.0.0.1 {self.primary.port} 2\n"
                            f"sentinel down-after-milliseconds {self.master_name} 1000\n"
                            f"sentinel failover-timeout {self.master_name} 3000\n")
            self.sentinels.append(subprocess.Popen(
                [REDIS_SERVER, str(conf), "--sentinel",
                 "--logfile", str(self.directory / f"sentinel-{index}.log")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            self.sentinel_ports.append(port)
        # Sentinels find each other through the primary: wait until each knows the other two.
        _wait(lambda: all(len(_sentinel(port).sentinel_sentinels(self.master_name)) == 2
                          for port in self.sentinel_ports), deadline)
        return self

    def current_primary_port(self) -> int:
        _, port = _sentinel(self.sentinel_ports[0]).sentinel_get_master_addr_by_name(self.master_name)
        return int(port)

    def stop(self) -> None:
        for process in self.sentinels:
            process.kill()
            process.wait(timeout=10)
        for server in (self.primary, self.replica):
            if server is not None:
                server.kill()


def _info(server: RedisServer, section: str) -> dict[str, object]:
    client = redis.Redis(port=server.port, socket_timeout=1)
    try:
        return dict(client.info(section))
    except redis.RedisError:
        return {}
    finally:
        client.close()


def _sentinel(port: int) -> redis.Redis:
    return redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1, decode_responses=True)


def _wait(condition: Callable[[], bool], deadline: float) -> None:
    while True:
        try:
            if condition():
                return
        except (redis.RedisError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("the Redis set-up did not come up in time")
        time.sleep(0.1)


REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


@dataclass
class ClusterGroup:
    """A Redis Cluster of three primaries and three replicas on loopback
    (../shared/testing-faults.md): ``redis-cli --cluster create`` assigns the slots, and the
    group is ready once every node reports ``cluster_state:ok``."""

    directory: Path
    node_timeout_ms: int = 2000
    nodes: list[RedisServer] = field(default_factory=list)
    server_args: list[str] = field(default_factory=list)  # e.g. --appendfsync everysec

    @property
    def seed_url(self) -> str:
        return self.nodes[0].url

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{node.port}" for node in self.nodes]

    def start(self, timeout: float = 60.0) -> ClusterGroup:
        try:
            return self._start(timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout: float) -> ClusterGroup:
        for index in range(6):
            directory = self.directory / f"node-{index}"
            self.nodes.append(RedisServer(directory, port=free_cluster_port(), extra_args=[
                "--cluster-enabled", "yes", "--cluster-config-file", str(directory / "nodes.conf"),
                "--cluster-node-timeout", str(self.node_timeout_ms), *self.server_args]).start())
        subprocess.run([REDIS_CLI, "--cluster", "create", *self.addresses, "--cluster-replicas", "1",
                        "--cluster-yes"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=timeout)
        deadline = time.monotonic() + timeout
        _wait(lambda: all(_info_command(node, "CLUSTER", "INFO").startswith("cluster_state:ok")
                          and _cluster_knows_all(node, len(self.nodes)) for node in self.nodes), deadline)
        # Replicas that have synced, so that WAIT 1 can be satisfied from the first write on.
        _wait(lambda: all(_info(node, "replication").get("master_link_status") == "up"
                          for node in self.nodes if _info(node, "replication").get("role") == "slave"),
              deadline)
        return self

    def primaries(self) -> list[RedisServer]:
        """The nodes that are primaries now (a failover changes the answer)."""
        return [node for node in self.nodes if node.process is not None
                and _info(node, "replication").get("role") == "master"]

    def node_for_slot(self, slot: int) -> RedisServer:
        """The primary serving ``slot`` now, as the running nodes see it."""
        for node in self.primaries():
            if any(start <= slot <= end for start, end in self.slot_ranges(node)):
                return node
        raise LookupError(slot)

    def slot_ranges(self, node: RedisServer) -> list[tuple[int, int]]:
        """The slot ranges ``node`` serves, as ``node`` itself sees them."""
        ranges = []
        for start, end, primary, *_ in _cluster_slots(node):
            if int(cast(list[object], primary)[1]) == node.port:
                ranges.append((int(cast(int, start)), int(cast(int, end))))
        return ranges

    def node_id(self, node: RedisServer) -> str:
        return _info_command(node, "CLUSTER", "MYID")

    def wait_promoted(self, slot: int, timeout: float = 30.0) -> RedisServer:
        """After the primary serving ``slot`` was killed: its replica, once promoted and the
        cluster whole again."""
        deadline = time.monotonic() + timeout

        def promoted() -> bool:
            try:
                self.node_for_slot(slot)
            except LookupError:
                return False
            return all(_info_command(node, "CLUSTER", "INFO").startswith("cluster_state:ok")
                       for node in self.nodes if node.process is not None)

        _wait(promoted, deadline)
        return self.node_for_slot(slot)

    def rejoin(self, node: RedisServer, timeout: float = 30.0) -> None:
        """Start a killed node again: it comes back as a replica of whoever took its slots."""
        node.start()
        deadline = time.monotonic() + timeout
        _wait(lambda: _info(node, "replication").get("role") == "slave"
              and _info(node, "replication").get("master_link_status") == "up", deadline)

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()


def free_cluster_port() -> int:
    """A free loopback port whose cluster bus port (the port + 10000) is free too."""
    while True:
        port = random.randrange(20000, 55000)
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port


def _info_command(server: RedisServer, *command: str) -> str:
    client = redis.Redis(port=server.port, socket_timeout=1, socket_connect_timeout=1, decode_responses=True)
    try:
        return str(client.execute_command(*command))
    except redis.RedisError:
        return ""
    finally:
        client.close()


def _cluster_slots(server: RedisServer) -> list[list[object]]:
    client = redis.Redis(port=server.port, socket_timeout=1, socket_connect_timeout=1, decode_responses=True)
    try:
        reply = client.execute_command("CLUSTER", "SLOTS")
        return [list(entry) for entry in reply] if isinstance(reply, list) else []
    finally:
        client.close()


def _cluster_knows_all(server: RedisServer, count: int) -> bool:
    nodes = _info_command(server, "CLUSTER", "NODES")
    return len([line for line in nodes.splitlines() if "connected" in line]) == count
