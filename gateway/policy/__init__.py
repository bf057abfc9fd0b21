"""Policies: the field catalogue, each shop's purposes and transforms, and release rules."""

from pathlib import Path

from gateway.errors import ConfigError
from gateway.policy.lint import Problem, check_catalogue, check_folder
from gateway.policy.models import Catalogue, FieldRule, Purpose, ShopPolicy
from gateway.policy.release import releasable_fields, release_claims
from gateway.policy.requests import ClaimsParameterError, requested_fields
from gateway.policy.transforms import TRANSFORMS, describe


def load_policies(policies_dir: Path) -> Catalogue:
    """Check the whole folder and return the catalogue; refuse (ConfigError) on any problem."""
    problems = check_folder(policies_dir)
    if problems:
        more = f" (and {len(problems) - 1} more; run `gateway policy check`)" if len(problems) > 1 else ""
        raise ConfigError(f"invalid policy {problems[0]}{more}")
    catalogue, _ = check_catalogue(policies_dir)
    if catalogue is None:  # cannot happen after a clean check; never continue without one
        raise ConfigError(f"invalid policy {policies_dir}: no catalogue")
    return catalogue


__all__ = [
    "TRANSFORMS", "Catalogue", "ClaimsParameterError", "FieldRule", "Problem", "Purpose",
    "ShopPolicy", "check_folder", "describe", "load_policies", "releasable_fields",
    "release_claims", "requested_fields",
]
