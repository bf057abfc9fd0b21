"""From a provider's profile to the gateway's field catalogue (policies/catalogue.yaml).

Every connector ends here: it names, for each catalogue field, where the value is in the
provider's answer (a :data:`FieldMap`), and :func:`catalogue_profile` picks the first
non-empty value and normalises it to the catalogue's type (gender ``male``/``female``,
region as ISO 3166-2 like ``CN-GD``, birthdate ``YYYY-MM-DD``, …). Whatever is not a
catalogue field is dropped here, so identifiers such as openid or user_id never reach the
stored profile.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import date
from typing import Any

# The catalogue fields a connector may fill (a test checks them against catalogue.yaml).
CATALOGUE_FIELDS = frozenset({
    "nickname", "avatar", "gender", "region", "city", "address", "email", "phone", "birthdate",
    "real_name", "id_number", "precise_location",
})

FieldMap = Mapping[str, tuple[str, ...]]

# ISO 3166-2:CN subdivision codes, by the names providers use (Chinese, with or without
# the administrative suffix, and pinyin).
_CN_PROVINCES: dict[str, str] = {
    "北京": "BJ", "beijing": "BJ", "天津": "TJ", "tianjin": "TJ", "河北": "HE", "hebei": "HE",
    "山西": "SX", "shanxi": "SX", "内蒙古": "NM", "inner mongolia": "NM", "neimenggu": "NM",
    "辽宁": "LN", "liaoning": "LN", "吉林": "JL", "jilin": "JL", "黑龙江": "HL",
    "heilongjiang": "HL", "上海": "SH", "shanghai": "SH", "江苏": "JS", "jiangsu": "JS",
    "浙江": "ZJ", "zhejiang": "ZJ", "安徽": "AH", "anhui": "AH", "福建": "FJ", "fujian": "FJ",
    "江西": "JX", "jiangxi": "JX", "山东": "SD", "shandong": "SD", "河南": "HA", "henan": "HA",
    "湖北": "HB", "hubei": "HB", "湖南": "HN", "hunan": "HN", "广东": "GD", "guangdong": "GD",
    "广西": "GX", "guangxi": "GX", "海南": "HI", "hainan": "HI", "重庆": "CQ", "chongqing": "CQ",
    "四川": "SC", "sichuan": "SC", "贵州": "GZ", "guizhou": "GZ", "云南": "YN", "yunnan": "YN",
    "西藏": "XZ", "tibet": "XZ", "xizang": "XZ", "陕西": "SN", "shaanxi": "SN", "甘肃": "GS",
    "gansu": "GS", "青海": "QH", "qinghai": "QH", "宁夏": "NX", "ningxia": "NX", "新疆": "XJ",
    "xinjiang": "XJ", "台湾": "TW", "taiwan": "TW", "香港": "HK", "hong kong": "HK",
    "澳门": "MO", "macau": "MO", "macao": "MO",
}
_PROVINCE_SUFFIXES = ("维吾尔自治区", "壮族自治区", "回族自治区", "特别行政区", "自治区", "省", "市")
_COUNTRIES = {"中国": "CN", "china": "CN", "cn": "CN", "chn": "CN"}


def region_code(country: Any, province: Any) -> str | None:
    """``CN-GD`` for Guangdong, whatever spelling the provider used; the bare country code
    when the province is unknown; None when not even the country is."""
    country_text = str(country or "").strip()
    code = _COUNTRIES.get(country_text.lower())
    if code is None and re.fullmatch(r"[A-Za-z]{2}", country_text):
        code = country_text.upper()
    name = str(province or "").strip()
    for suffix in _PROVINCE_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
            break
    subdivision = _CN_PROVINCES.get(name.lower())
    if subdivision and code in (None, "CN"):
        return f"CN-{subdivision}"
    return code


def lookup(profile: Mapping[str, Any], path: str) -> Any:
    """A value by dotted path (``address.locality``), or None."""
    value: Any = profile
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _text(value: Any, limit: int = 200) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value).strip()
    return text[:limit] if text else None


def _url(value: Any) -> str | None:
    text = _text(value, 2048)
    return text if text and re.match(r"^https?://[^\s]+$", text) else None


def _gender(value: Any) -> str | None:
    text = (_text(value) or "").lower()
    if text in ("1", "m", "male", "man", "男"):
        return "male"
    if text in ("2", "f", "female", "woman", "女"):
        return "female"
    return None  # 0 / unknown / free text: not given


def _email(value: Any) -> str | None:
    text = _text(value, 254)
    return text if text and re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", text) else None


def _phone(value: Any) -> str | None:
    text = re.sub(r"[\s()-]", "", _text(value) or "")
    return text if re.fullmatch(r"\+?[0-9]{5,20}", text) else None


def _birthdate(value: Any) -> str | None:
    text = _text(value) or ""
    if re.fullmatch(r"[0-9]{8}", text):  # Alipay: 19900412
        text = f"{text[:4]}-{text[4:6]}-{text[6:]}"
    try:
        return date.fromisoformat(text).isoformat() if len(text) == 10 else None
    except ValueError:
        return None  # OIDC allows "0000-04-12" or "1990": not a date the catalogue can use


def _city(value: Any) -> str | None:
    text = _text(value, 100)
    if text and text.endswith("市") and len(text) > 2:
        text = text[:-1]
    return text


def _region(value: Any) -> str | None:
    text = _text(value, 10)
    return text if text and re.fullmatch(r"[A-Z]{2}(-[A-Z0-9]{1,3})?", text) else None


_ADDRESS_MEMBERS = ("formatted", "street_address", "locality", "region", "postal_code", "country")


def _address(value: Any) -> dict[str, str] | None:
    if not isinstance(value, Mapping):
        return None
    kept = {k: t for k in _ADDRESS_MEMBERS if (t := _text(value.get(k), 300))}
    return kept or None


def _id_number(value: Any) -> str | None:
    text = (_text(value, 32) or "").upper()
    return text if re.fullmatch(r"[0-9A-Z]{6,32}", text) else None


def _location(value: Any) -> dict[str, Any] | None:
    if not isinstance(value, Mapping):
        return None
    lat, lon = value.get("latitude"), value.get("longitude")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (lat, lon)):
        return None
    kept: dict[str, Any] = {"latitude": lat, "longitude": lon}
    if locality := _text(value.get("locality"), 100):
        kept["locality"] = locality
    return kept


NORMALISERS: dict[str, Callable[[Any], Any]] = {
    "nickname": lambda v: _text(v, 64),
    "avatar": _url,
    "gender": _gender,
    "region": _region,
    "city": _city,
    "address": _address,
    "email": _email,
    "phone": _phone,
    "birthdate": _birthdate,
    "real_name": lambda v: _text(v, 100),
    "id_number": _id_number,
    "precise_location": _location,
}


def catalogue_profile(raw: Mapping[str, Any], fields: FieldMap) -> dict[str, Any]:
    """The catalogue fields found in ``raw``: for each, the first path giving a usable value."""
    profile: dict[str, Any] = {}
    for name, paths in fields.items():
        normalise = NORMALISERS.get(name)
        if normalise is None:
            continue  # not a catalogue field: never stored
        for path in paths:
            value = normalise(lookup(raw, path))
            if value is not None:
                profile[name] = value
                break
    return profile


def check_field_map(fields: Mapping[str, Any], where: str) -> None:
    """Refuse a configured mapping that names something outside the catalogue."""
    unknown = sorted(set(fields) - CATALOGUE_FIELDS)
    if unknown:
        raise ValueError(f"{where}: not catalogue fields: {unknown}")
