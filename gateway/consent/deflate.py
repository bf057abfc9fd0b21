"""Consent records deflated for Redis: every person has one per shop, so bytes count.

Stored form: ``"z1"`` then base85 (RFC 1924 alphabet, Python's ``base64.b85encode``) of the
record's JSON (format 2, records.py) compressed with raw DEFLATE (RFC 1951, no zlib header
or checksum) primed with :data:`DICTIONARY`. A record's JSON is short and made of the same
words (field and purpose names, transforms, legal bases), which a preset dictionary lets
even a first occurrence refer to: the demo shop's full grant, 1,481 bytes of JSON, deflates
to 669 bytes alone and to 525 with the dictionary, 659 characters stored. Base85 because
the commit script takes the value as text (gateway/store/commits.py); raw bytes would save
a fifth.

The dictionary is part of the format: changing it makes every stored record unreadable.
A new dictionary needs a new marker (``"z2"``) and this module reading both.
"""

from __future__ import annotations

import base64
import zlib

MARKER = b"z1"

# Strings a record repeats, most frequent last (DEFLATE reaches the end of the window
# with the shortest distances). Never edit: see the module docstring.
DICTIONARY = (
    b'KI-CR-v1.1.0 https:// privacy@ .invalid To your orders deliver show create account at this shop'
    b' consent_screen","declined","withdrawn",'
    b'"legal_obligation","contract","consent",'
    b'"drop","pseudonymise","generalise_province","generalise_country","generalise_city",'
    b'"generalise_age_over_18","generalise_age_band","relay_email","mask","pass",'
    b'"invoice","pickup_nearby","delivery_contact","delivery","age_check","account",'
    b'"precise_location","id_number","real_name","gender","address","region","city",'
    b'"birthdate","phone","email","avatar","nickname",'
    b'{"v":2,"c":"'
)


def deflate(text: str) -> str:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15, zdict=DICTIONARY)
    packed = compressor.compress(text.encode()) + compressor.flush()
    return (MARKER + base64.b85encode(packed)).decode("ascii")


def is_deflated(stored: bytes | str) -> bool:
    return (stored.encode() if isinstance(stored, str) else stored).startswith(MARKER)


def inflate(stored: bytes | str) -> str:
    raw = stored.encode() if isinstance(stored, str) else stored
    decompressor = zlib.decompressobj(-15, zdict=DICTIONARY)
    text = decompressor.decompress(base64.b85decode(raw[len(MARKER):])) + decompressor.flush()
    if not decompressor.eof:
        raise ValueError("consent record truncated")
    return text.decode()
