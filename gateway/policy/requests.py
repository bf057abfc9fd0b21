"""What a shop asks for: OIDC scopes and the ``claims`` request parameter, as catalogue fields.

OIDC Core §5.4 (scopes) and §5.5 (the claims parameter). Asking is not receiving: release
intersects the request with the shop's policy and the person's consent.
"""

from __future__ import annotations

import json
from typing import Any

from gateway.policy.models import Catalogue

SCOPE_FIELDS: dict[str, tuple[str, ...]] = {
    "profile": ("nickname", "avatar", "gender", "birthdate", "real_name"),
    "email": ("email",),
    "phone": ("phone",),
    "address": ("address", "region", "city"),
}
MAX_CLAIMS_PARAMETER = 4096


class ClaimsParameterError(ValueError):
    """The ``claims`` parameter is not the JSON object OIDC Core §5.5 describes."""


def fields_for_scopes(scope: str) -> set[str]:
    return {field for name in scope.split() for field in SCOPE_FIELDS.get(name, ())}


def fields_for_claims_parameter(raw: str | None, catalogue: Catalogue) -> set[str]:
    """Catalogue fields named by the ``userinfo`` and ``id_token`` members of ``claims``.

    Unknown claim names are ignored (OIDC Core §5.5: a claim the OP does not understand is
    not an error); a malformed parameter is.
    """
    if not raw:
        return set()
    if len(raw) > MAX_CLAIMS_PARAMETER:
        raise ClaimsParameterError("The 'claims' parameter is too long.")
    try:
        parsed: Any = json.loads(raw)
    except ValueError:
        raise ClaimsParameterError("The 'claims' parameter is not valid JSON.") from None
    if not isinstance(parsed, dict):
        raise ClaimsParameterError("The 'claims' parameter must be a JSON object.")
    by_claim = {spec.claim: name for name, spec in catalogue.fields.items()}
    fields: set[str] = set()
    for member in ("userinfo", "id_token"):
        requested = parsed.get(member) or {}
        if not isinstance(requested, dict):
            raise ClaimsParameterError(f"The 'claims.{member}' member must be a JSON object.")
        fields |= {by_claim[claim] for claim in requested if claim in by_claim}
    return fields


def requested_fields(scope: str, claims: str | None, catalogue: Catalogue) -> set[str]:
    return fields_for_scopes(scope) | fields_for_claims_parameter(claims, catalogue)
