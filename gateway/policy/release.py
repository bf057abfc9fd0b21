"""``release_claims``: the one function that decides what a shop receives.

released = requested ∩ named by the shop's policy ∩ consented (and not expired), each value
transformed as the policy says, plus the pairwise ``sub``. Used by userinfo (and by anything
else that ever hands out profile data), so the rule lives in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import date
from typing import Any

from gateway.policy.models import Catalogue, ShopPolicy
from gateway.policy.transforms import TRANSFORMS, TransformContext


def releasable_fields(policy: ShopPolicy, requested: Iterable[str],
                      consented: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """(field, transform) pairs for fields requested, named by the policy and consented for
    the purpose the policy names them under."""
    wanted = set(requested)
    return {
        (rule.field, rule.transform)
        for rule in policy.fields
        if rule.field in wanted and rule.purpose and (rule.purpose, rule.field) in consented
        and rule.transform != "drop"
    }


def release_claims(
    *,
    shop_id: str,
    person_id: str,
    subject: str,
    policy: ShopPolicy,
    catalogue: Catalogue,
    requested: Iterable[str],
    consented: set[tuple[str, str]],
    profile: dict[str, Any],
    shop_key: Callable[[str], bytes],
    relay_domain: str,
    today: date,
) -> tuple[dict[str, Any], list[str]]:
    """The claims for the shop and the names of the fields released (for the audit log)."""
    claims: dict[str, Any] = {"sub": subject}
    released: list[str] = []
    for field, transform_name in sorted(releasable_fields(policy, requested, consented)):
        spec = catalogue.fields.get(field)
        if spec is None or field not in profile or profile[field] in (None, ""):
            continue
        transform = TRANSFORMS[transform_name]
        context = TransformContext(shop_id=shop_id, person_id=person_id, field=field,
                                   field_type=spec.type, shop_key=shop_key(shop_id),
                                   relay_domain=relay_domain, today=today)
        value = transform.apply(profile[field], context)
        if value is None:
            continue
        claims[(transform.claim or spec.claim) + transform.claim_suffix] = value
        if field not in released:
            released.append(field)
    return claims, released
