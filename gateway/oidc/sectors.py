"""Pairwise sectors (OIDC Core §8.1), per shop by default.

Many shops here share one platform host, so the host of the redirect URIs would put them all
in one sector and give them one ``sub`` for the same person. The sector is therefore the
shop itself (``shop:<client_id>``) unless its file names a ``sector_identifier_uri``. That
URI is fetched and must be a JSON array listing every redirect URI of the shop; only then
is the shop in that sector, and shops naming the same verified URI share subjects. The
sector is the whole URI, not only its host as §8.1 says: one platform host often serves
documents for unrelated shop groups.

Fetching (classic httpx, like every call to a third party, so that respx can imitate it):
https only, no redirects, no compression, at most ``MAX_BYTES`` on the wire, within
``DEADLINE_SECONDS`` in total. httpx's timeout bounds each socket operation only, so the
request runs on a daemon thread and the caller stops waiting at the deadline, whatever
the server does (a stalled connect, headers that never come, a trickling body); the thread
gives up at the deadline too, at most one socket timeout later.

A verified document is remembered in ``keys/shops/<id>.sector`` (the URI and the redirect
URIs it covered), so that a restart while the shop's host is down or unreachable keeps the
shop's sector; a document that answers but does not list the redirect URIs always refuses
the shop. Failing closed is deliberate: a shop whose sector cannot be established is not
loaded at all (ConfigError, so the gateway does not start and ``gateway policy check``
names it) rather than put in some other sector, since issuing one ``sub`` and then another
would break the shop's accounts, and a shared one would link people across shops.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from gateway.config.settings import check_https_url
from gateway.errors import ConfigError
from gateway.vault.files import write_private_file

log = logging.getLogger(__name__)

MAX_BYTES = 64 * 1024
DEADLINE_SECONDS = 5.0

Fetch = Callable[[str], bytes]


class SectorFetchError(Exception):
    """The sector document could not be fetched (network, status, size, time)."""


def fetch_document(uri: str) -> bytes:
    """GET ``uri``: at most ``MAX_BYTES``, within ``DEADLINE_SECONDS`` in total."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    outcome: list[bytes | SectorFetchError] = []

    def run() -> None:
        try:
            outcome.append(_read_capped(uri, deadline))
        except SectorFetchError as error:
            outcome.append(error)
        except Exception as error:  # noqa: BLE001 - reported to the caller, not lost in a thread
            outcome.append(SectorFetchError(type(error).__name__))

    worker = threading.Thread(target=run, name="sector-document", daemon=True)
    worker.start()
    worker.join(max(0.0, deadline - time.monotonic()))
    if not outcome:
        raise SectorFetchError(f"not complete within {DEADLINE_SECONDS} s")
    if isinstance(outcome[0], SectorFetchError):
        raise outcome[0]
    return outcome[0]


def _read_capped(uri: str, deadline: float) -> bytes:
    body = bytearray()
    try:
        with httpx.stream("GET", uri, timeout=DEADLINE_SECONDS, follow_redirects=False,
                          headers={"accept": "application/json", "accept-encoding": "identity"},
                          ) as response:
            if response.status_code != 200:
                raise SectorFetchError(f"HTTP {response.status_code}")
            encoding = response.headers.get("content-encoding", "identity").strip().lower()
            if encoding != "identity":
                raise SectorFetchError(f"compressed (Content-Encoding: {encoding})")
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > MAX_BYTES:
                raise SectorFetchError(f"larger than {MAX_BYTES} bytes")
            for chunk in response.iter_raw():
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
            # Verified before; the shop's host is down now. Say so: the operator should know.
            log.warning("sector document unreachable, using the remembered verification",
                        extra={"shop": client_id, "error": str(error)})
            return uri
        raise ConfigError(f"{where}: cannot be fetched ({error})") from None
    try:
        listed = _listed(document)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None
    missing = [u for u in redirect_uris if u not in listed]
    if missing:
        raise ConfigError(f"{where}: does not list the redirect URIs {missing} (OIDC Core §8.1)")
    if not _remembered_covers(remembered, uri, redirect_uris):
        # Written only when it changes: `gateway serve --workers N` loads the shops in every
        # worker at once. Remembering is a convenience for restarts, never a reason to fail.
        try:
            write_private_file(remembered, json.dumps({
                "uri": uri, "redirect_uris": sorted(redirect_uris),
                "verified_at": int(time.time())}).encode())
        except OSError as error:
            log.warning("cannot remember the verified sector document",
                        extra={"shop": client_id, "error": type(error).__name__})
    return uri


def _remembered_covers(path: Path, uri: str, redirect_uris: list[str]) -> bool:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return bool(data.get("uri") == uri and set(redirect_uris) <= set(data.get("redirect_uris", [])))
