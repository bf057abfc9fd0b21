"""Which profile fields a shop receives for the scopes it holds.

OIDC Core §5.4 maps scopes to standard claims. The ID token carries no profile claims at
all (only who and when), so that a token a shop logs or forwards reveals nothing more; the
profile goes out only through userinfo. The consent-policy work narrows this further to
what each shop's policy names and the person consented to.
"""

from __future__ import annotations

from typing import Any

# scope -> (catalogue field, OIDC claim name)
SCOPE_FIELDS: dict[str, tuple[tuple[str, str], ...]] = {
    "profile": (("nickname", "nickname"), ("avatar", "picture"), ("gender", "gender"),
                ("birthdate", "birthdate")),
    "email": (("email", "email"),),
    "phone": (("phone", "phone_number"),),
}
# address scope -> fields of the OIDC "address" claim object (OIDC Core §5.1.1)
ADDRESS_FIELDS: tuple[tuple[str, str], ...] = (("region", "region"), ("city", "locality"))


def release_claims(profile: dict[str, Any], scope: str, subject: str) -> dict[str, Any]:
    """The userinfo claims for ``scope``: ``sub`` plus the fields those scopes cover."""
    claims: dict[str, Any] = {"sub": subject}
    for name in scope.split():
        for field, claim in SCOPE_FIELDS.get(name, ()):
            if field in profile and profile[field] not in (None, ""):
                claims[claim] = profile[field]
    if "address" in scope.split():
        address = {part: profile[f] for f, part in ADDRESS_FIELDS if profile.get(f)}
        if address:
            claims["address"] = address
    if "email" in claims:
        claims["email_verified"] = False  # the gateway has not verified it itself
    if "phone_number" in claims:
        claims["phone_number_verified"] = False
    return claims
