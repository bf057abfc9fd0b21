"""The JSON Schema of the policy files, generated from the pydantic models (docs/policy-schema.json)."""

from __future__ import annotations

from typing import Any

from gateway.policy.models import Catalogue, ShopPolicy
from gateway.policy.transforms import TRANSFORMS


def policy_json_schema() -> dict[str, Any]:
    policy = ShopPolicy.model_json_schema(by_alias=True)
    catalogue = Catalogue.model_json_schema(by_alias=True)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://consent-gateway.invalid/schemas/policy.json",
        "title": "Consent Gateway policy files",
        "description": "policy: the consent part of policies/shops/<shop>.yaml; "
                       "catalogue: policies/catalogue.yaml. Transforms: " + ", ".join(TRANSFORMS),
        "type": "object",
        "properties": {"policy": policy, "catalogue": catalogue},
    }
