"""``gateway serve | demo | keys … | shops …``: thin wrappers over the services."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from functools import wraps
from typing import TYPE_CHECKING, Any, TypeVar

import click

from gateway.config import Settings, load_settings
from gateway.errors import GatewayError

if TYPE_CHECKING:
    pass

F = TypeVar("F", bound=Callable[..., Any])


def one_line_errors(function: F) -> F:
    """Configuration problems end the command with one clear line, not a traceback."""

    @wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except GatewayError as error:  # ConfigError and the vault's refusals alike
            click.echo(f"gateway: {error}", err=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


@click.group()
def main() -> None:
    """Consent Gateway: an OpenID provider that releases only what people consent to."""


def _serve(settings: Settings, host: str, port: int, extra: list[Any] | None = None) -> None:
    import uvicorn

    from gateway.app import create_app
    from gateway.telemetry import configure_logging

    configure_logging(settings.log_level)
    app = create_app(settings)
    servers = [uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_config=None,
                                             proxy_headers=True, server_header=False))]
    servers += extra or []

    async def run_all() -> None:
        await asyncio.gather(*(server.serve() for server in servers))

    asyncio.run(run_all())


def _serve_workers(settings: Settings, host: str, port: int, workers: int) -> None:
    """Several worker processes (uvicorn's process manager). The parent prepares what must
    exist once — keys, sealed secrets, the embedded Redis — then the workers share it."""
    import os

    import uvicorn

    from gateway.app import build_gateway
    from gateway.telemetry import configure_logging

    configure_logging(settings.log_level)
    gateway = build_gateway(settings)  # creates keys and secrets before workers race for them
    if settings.uses_embedded_redis:
        # The parent owns the embedded server; workers connect to its socket.
        os.environ["GATEWAY_REDIS_URL"] = gateway.store.url
    else:
        gateway.store.close()
    try:
        uvicorn.run("gateway.asgi:create", factory=True, host=host, port=port, workers=workers,
                    log_config=None, proxy_headers=True, server_header=False)
    finally:
        if settings.uses_embedded_redis:
            gateway.store.close()


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Worker processes (docs/performance.md: 2 on a 2-core machine).")
@one_line_errors
def serve(host: str, port: int, workers: int) -> None:
    """Run the gateway with the configured settings."""
    settings = load_settings()
    if workers > 1:
        _serve_workers(settings, host, port, workers)
    else:
        _serve(settings, host, port)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--shop-port", default=8001, show_default=True, type=int)
@one_line_errors
def demo(host: str, port: int, shop_port: int) -> None:
    """Run the gateway in demo mode with an embedded Redis and the demo shop."""
    import uvicorn

    from gateway.audit.staff import new_staff_token
    from gateway.demoshop import DEMO_SHOP_ID, create_demo_shop
    from gateway.oidc.clients import issue_client_secret

    issuer = f"http://{host}:{port}"
    staff_token, staff_digest = new_staff_token()  # a console sign-in for this demo run only
    settings = load_settings(demo=True, issuer=issuer, staff=[
        {"id": "demo-officer", "role": "admin", "token_sha256": staff_digest}])
    secret = issue_client_secret(settings.keys_dir, DEMO_SHOP_ID)
    shop_url = f"http://{host}:{shop_port}"
    shop_app = create_demo_shop(issuer=issuer, base_url=shop_url, client_secret=secret)
    shop_server = uvicorn.Server(uvicorn.Config(shop_app, host=host, port=shop_port,
                                                log_config=None, server_header=False))
    click.echo("Consent Gateway demo (demo mode: fictional people, never use in production)")
    click.echo(f"  open the demo shop:   {shop_url}/")
    click.echo(f"  gateway discovery:    {issuer}/.well-known/openid-configuration")
    click.echo(f"  your consent centre:  {issuer}/account")
    click.echo(f"  compliance console:   {issuer}/audit  (staff token: {staff_token})")
    where = f"embedded, data in {settings.data_dir}" if settings.uses_embedded_redis else settings.redis_url
    click.echo(f"  redis:                {where}")
    _serve(settings, host, port, extra=[shop_server])
