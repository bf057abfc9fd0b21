"""``gateway policy …`` and ``gateway shops …``: policies and shops in policies/."""

from __future__ import annotations

import sys

import click

from gateway.cli.main import main, one_line_errors
from gateway.config import load_settings
from gateway.errors import ConfigError


@main.group()
def policy() -> None:
    """Consent policies in policies/ (catalogue.yaml and shops/*.yaml)."""


@policy.command("check")
@one_line_errors
def policy_check() -> None:
    """Lint the whole policies folder; every problem with its file and line."""
    from gateway.oidc.clients import ShopRegistry
    from gateway.policy import check_folder

    settings = load_settings()
    problems = [str(p) for p in check_folder(settings.policies_dir)]
    if not problems:
        try:  # the protocol part of the shop files too
            ShopRegistry.load(settings.policies_dir, settings.keys_dir, settings.signing_alg)
        except ConfigError as error:
            problems.append(str(error))
    for problem in problems:
        click.echo(problem)
    if problems:
        sys.exit(1)
    click.echo(f"{settings.policies_dir}: no problems")


@policy.command("schema")
def policy_schema() -> None:
    """Print the JSON Schema of a shop file's policy and of the catalogue."""
    import json

    from gateway.policy.schema import policy_json_schema

    click.echo(json.dumps(policy_json_schema(), indent=2, ensure_ascii=False))


@main.group()
def shops() -> None:
    """Shops declared in policies/shops."""


@shops.command("list")
@one_line_errors
def shops_list() -> None:
    from gateway.oidc.clients import ShopRegistry

    settings = load_settings()
    for shop in ShopRegistry.load(settings.policies_dir, settings.keys_dir, settings.signing_alg):
        click.echo(f"{shop.client_id}  {shop.config.token_endpoint_auth_method}  {shop.config.name}")


@shops.command("secret")
@click.argument("client_id")
@one_line_errors
def shops_secret(client_id: str) -> None:
    """Draw a new client secret; it is printed once and only its digest is kept."""
    from gateway.oidc.clients import ShopRegistry, issue_client_secret

    settings = load_settings()
    shop = ShopRegistry.load(settings.policies_dir, settings.keys_dir, settings.signing_alg).get(client_id)
    if shop is None:
        raise ConfigError(f"no shop with client_id {client_id!r} in {settings.policies_dir}/shops")
    if shop.config.is_public:
        raise ConfigError(f"shop {client_id!r} is a public client (token_endpoint_auth_method: none)")
    click.echo(issue_client_secret(settings.keys_dir, client_id))

