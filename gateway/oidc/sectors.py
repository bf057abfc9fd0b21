"""Pairwise sectors (OIDC Core §8.1), per shop by default.

Many shops here share one platform host, so the host of the redirect URIs would put them all
in one sector and give them one ``sub`` for the same person. The sector is therefore the
shop itself (``shop:<client_id>``) unless its file names a ``sector_identifier_uri``. That
URI is fetched and must be a JSON array listing every redirect URI of the shop; only then
is the shop in that sector, and shops naming the same verified URI share subjects. The
sector is the whole URI, not only its host as §8.1 says: one platform host often serves
documents for unrelated shop groups.

Fetching (classic httpx, like every call to a third party): https only, no redirects, at
most ``MAX_BYTES``, within ``DEADLINE_SECONDS`` in
total (not per read). A verified document is remembered in ``keys/shops/<id>.sector`` (the
URI and the redirect URIs it covered), so that a restart while the shop's host is down
keeps the shop's sector; a document that answers but does not list the redirect URIs
always refuses the shop.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from gateway.config.settings import check_https_url
from gateway.errors import ConfigError
from gateway.vault.files import write_private_file

MAX_BYTES = 64 * 1024
DEADLINE_SECONDS = 5.0

Fetch = Callable[[str], bytes]


class SectorFetchError(Exception):
    """The sector document could not be fetched (network, status, size, time)."""


def fetch_document(uri: str) -> bytes:
    """GET ``uri`` with a size cap and a total deadline."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    body = bytearray()
    try:
        with httpx.stream("GET", uri, timeout=DEADLINE_SECONDS, follow_redirects=False) as response:
            if response.status_code != 200:
                raise SectorFetchError(f"HTTP {response.status_code}")
            for chunk in response.iter_bytes():
                body.extend(chunk)
                if len(body) > MAX_BYTES:
                    raise SectorFetchError(f"larger than {MAX_BYTES} bytes")
                if time.monotonic() > deadline:
                    raise SectorFetchError(f"not complete within {DEADLINE_SECONDS} s")
    except httpx.HTTPError as error:
        raise SectorFetchError(type(error).__name__) from None
    return bytes(body)


def _listed(document: bytes) -> list[str]:
    try:
        uris = json.loads(document)
    except (ValueError, UnicodeDecodeError):
        raise ConfigError("is not JSON") from None
    if not isinstance(uris, list) or not all(isinstance(u, str) for u in uris):
        raise ConfigError("is not a JSON array of redirect URIs")
    return uris


def verified_sector(client_id: str, uri: str | None, redirect_uris: list[str], keys_dir: Path,
                    fetch: Fetch = fetch_document) -> str:
    """The shop's pairwise sector; raises ConfigError (one line naming the shop) when its
    sector document cannot be verified."""
    if uri is None:
        return f"shop:{client_id}"
    where = f"shop {client_id}: sector_identifier_uri {uri}"
    try:
        check_https_url(uri, "sector_identifier_uri")
    except ValueError as error:
        raise ConfigError(f"{where}: {error}") from None
    remembered = keys_dir / "shops" / f"{client_id}.sector"
    try:
        document = fetch(uri)
    except SectorFetchError as error:
        if _remembered_covers(remembered, uri, redirect_uris):
            return uri  # verified before; the shop's host is down now
        raise ConfigError(f"{where}: cannot be fetched ({error})") from None
    try:
        listed = _listed(document)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None
    missing = [u for u in redirect_uris if u not in listed]
    if missing:
        raise ConfigError(f"{where}: does not list the redirect URIs {missing} (OIDC Core §8.1)")
    write_private_file(remembered, json.dumps({"uri": uri, "redirect_uris": sorted(redirect_uris),
                                               "verified_at": int(time.time())}).encode())
    return uri


def _remembered_covers(path: Path, uri: str, redirect_uris: list[str]) -> bool:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return bool(data.get("uri") == uri and set(redirect_uris) <= set(data.get("redirect_uris", [])))
