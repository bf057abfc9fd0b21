"""Redis bytes of every person and every shop in a kept benchmark run.

    python -m bench --flows login --targets gateway --keep-keys …   # keys stay under cgperf:<run>:
    python -m bench.shop_memory cgperf:<run>:gw:

The benchmark's own table (``person_memory`` in bench/run.py) measures one person at one
shop; this one walks what a run left behind and splits it into what a person costs once
(sealed profile, wrapped data key, identity links) and what each shop they use adds
(consent record, grant generation, the shop's family index). Tokens are left out: they
expire, and one sign-in's worth is in the benchmark's table. ``MEMORY USAGE … SAMPLES 0``,
as there.
"""

from __future__ import annotations

import argparse
import re

import redis

from bench.redis_meter import escape_pattern, memory_usage, scan_keys
from gateway.store import KeySpace
from gateway.upstream.links import LinkIndex

_CONSENT = re.compile(r"\{p:(?P<person>[^}]+)\}:consent:(?P<shop>.+)$")


def person_costs(client: redis.Redis, prefix: str
                 ) -> tuple[dict[str, int], dict[tuple[str, str], dict[str, int]]]:
    """Bytes per person once, and per person and shop (consent record, grant, family index
    and how many families it lists), of the people with a consent record."""
    keys = KeySpace(prefix)
    records = scan_keys(client, f"{escape_pattern(prefix)}{{p:*}}:consent:*")
    pairs = [(m["person"], m["shop"]) for key in records if (m := _CONSENT.search(key))]
    once: dict[str, int] = {}
    for person in sorted({p for p, _ in pairs}):
        links = LinkIndex(client, keys).link_keys(person)
        once[person] = sum(memory_usage(client, [keys.person_profile(person), keys.vault_data_key(person),
                                                 keys.person_links(person), *links]).values())
    per_shop: dict[tuple[str, str], dict[str, int]] = {}
    for person, shop in sorted(pairs):
        named = {"consent": keys.person_consent(person, shop), "grant": keys.person_grant(person, shop),
                 "families": keys.person_shop_families(person, shop)}
        sizes = memory_usage(client, list(named.values()))
        per_shop[person, shop] = {part: sizes.get(key, 0) for part, key in named.items()} | {
            "family_count": _count(client, named["families"])}
    return once, per_shop


def _count(client: redis.Redis, key: str) -> int:
    """Entries of a family index: a hash of family ids, or a set as written before."""
    return int(client.scard(key) if client.type(key) in (b"set", "set") else client.hlen(key))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.shop_memory", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prefix", help="the gateway's key prefix of a kept run, e.g. cgperf:1a2b3c4d:gw:")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    options = parser.parse_args()
    once, per_shop = person_costs(redis.Redis.from_url(options.redis_url), options.prefix)
    print("| person | shop | consent record | grant | family index (families) | per shop |")
    print("|---|---|--:|--:|--:|--:|")
    for (person, shop), b in per_shop.items():
        print(f"| {person[:8]}… | {shop} | {b['consent']:,} | {b['grant']:,} "
              f"| {b['families']:,} ({b['family_count']}) | {b['consent'] + b['grant'] + b['families']:,} |")
    print()
    print("| person | once (profile + data key + links) |")
    print("|---|--:|")
    for person, total in once.items():
        print(f"| {person[:8]}… | {total:,} |")


if __name__ == "__main__":
    main()
