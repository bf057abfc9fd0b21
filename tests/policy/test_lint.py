"""``gateway policy check``: each problem reported with its file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.policy import check_folder, load_policies
from tests.conftest import REPO_POLICIES

SHOP_HEAD = """client_id: shop-lint
name: Lint shop
redirect_uris: [https://lint.example/cb]
policy:
  version: 1
  purposes:
    - id: account
      name: {zh-CN: 账户, en: Account}
      description: {zh-CN: 账户。, en: Account.}
      retention_days: 30
"""


def write_shop(policies_dir: Path, fields: str, extra_purposes: str = "") -> Path:
    path = policies_dir / "shops" / "lint.yaml"
    path.write_text(SHOP_HEAD + extra_purposes + "  fields:\n" + fields, encoding="utf-8")
    return path


def messages(policies_dir: Path) -> list[str]:
    return [str(p) for p in check_folder(policies_dir)]


def test_the_repository_policies_are_clean() -> None:
    assert check_folder(REPO_POLICIES) == []


def test_unknown_field_is_reported_with_its_line(policies_dir: Path) -> None:
    path = write_shop(policies_dir, "    - {field: shoe_size, purpose: account}\n")
    assert messages(policies_dir) == [f"{path}:12: unknown field 'shoe_size' (not in the catalogue)"]


def test_transform_not_allowed_on_the_field(policies_dir: Path) -> None:
    path = write_shop(policies_dir, "    - field: avatar\n      purpose: account\n      transform: mask\n")
    (problem,) = messages(policies_dir)
    assert problem.startswith(f"{path}:14: transform 'mask' is not allowed on field 'avatar'")


def test_sensitive_field_folded_in_with_ordinary_ones(policies_dir: Path) -> None:
    path = write_shop(policies_dir, "    - {field: nickname, purpose: account}\n"
                                    "    - {field: phone, purpose: account, transform: mask}\n")
    (problem,) = messages(policies_dir)
    assert problem.startswith(f"{path}:7: purpose 'account' folds sensitive fields in with ordinary")


def test_required_field_missing_a_purpose(policies_dir: Path) -> None:
    path = write_shop(policies_dir, "    - {field: nickname, required: true}\n")
    assert messages(policies_dir) == [
        f"{path}:12: required field 'nickname' is missing a purpose (names no purpose)"]


def test_field_naming_an_unknown_purpose(policies_dir: Path) -> None:
    path = write_shop(policies_dir, "    - {field: nickname, purpose: marketing}\n")
    assert messages(policies_dir) == [
        f"{path}:12: field 'nickname' is missing a purpose (names 'marketing' which does not exist)"]


def test_duplicate_purpose_ids(policies_dir: Path) -> None:
    duplicate = ("    - id: account\n      name: {zh-CN: 又, en: Again}\n"
                 "      description: {zh-CN: 又。, en: Again.}\n      retention_days: 5\n")
    path = write_shop(policies_dir, "    - {field: nickname, purpose: account}\n", duplicate)
    assert messages(policies_dir) == [f"{path}:11: duplicate purpose id 'account'"]


def test_duplicate_field_in_one_purpose(policies_dir: Path) -> None:
    path = write_shop(policies_dir, "    - {field: nickname, purpose: account}\n"
                                    "    - {field: nickname, purpose: account}\n")
    assert messages(policies_dir) == [f"{path}:13: duplicate field 'nickname' in purpose 'account'"]


def test_two_values_for_one_claim(policies_dir: Path) -> None:
    second = ("    - id: other\n      name: {zh-CN: 其他, en: Other}\n"
              "      description: {zh-CN: 其他。, en: Other.}\n      retention_days: 5\n")
    path = write_shop(policies_dir, "    - {field: email, purpose: account, transform: pass}\n"
                                    "    - {field: email, purpose: other, transform: mask}\n", second)
    (problem,) = messages(policies_dir)
    assert problem.startswith(f"{path}:17: claim 'email' would carry different values")


def test_shape_errors_carry_the_line_of_the_bad_value(policies_dir: Path) -> None:
    path = write_shop(policies_dir, "    - {field: nickname, purpose: account, required: maybe}\n")
    (problem,) = messages(policies_dir)
    assert problem.startswith(f"{path}:12: fields.0.required:")


def test_invalid_yaml_is_reported_with_its_line(policies_dir: Path) -> None:
    path = policies_dir / "shops" / "broken.yaml"
    path.write_text("client_id: x\npolicy: [unclosed\n", encoding="utf-8")
    (problem,) = messages(policies_dir)
    assert problem.startswith(f"{path}:3: not valid YAML")


def test_every_problem_is_reported_not_just_the_first(policies_dir: Path) -> None:
    write_shop(policies_dir, "    - {field: shoe_size, purpose: account}\n"
                             "    - {field: avatar, purpose: account, transform: mask}\n"
                             "    - {field: nickname, required: true}\n")
    assert len(messages(policies_dir)) == 3


def test_the_gateway_refuses_to_start_on_an_invalid_policy(policies_dir: Path) -> None:
    write_shop(policies_dir, "    - {field: shoe_size, purpose: account}\n")
    with pytest.raises(ConfigError, match=r"invalid policy .*lint.yaml:12: unknown field"):
        load_policies(policies_dir)


def test_unknown_transform_in_the_catalogue(policies_dir: Path) -> None:
    catalogue = policies_dir / "catalogue.yaml"
    catalogue.write_text(catalogue.read_text(encoding="utf-8").replace(
        "transforms: [pass, pseudonymise, drop]", "transforms: [pass, blur]", 1), encoding="utf-8")
    (problem,) = messages(policies_dir)
    assert "unknown transform 'blur'" in problem and problem.startswith(f"{catalogue}:")
