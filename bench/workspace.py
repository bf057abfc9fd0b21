"""Everything one benchmark run needs on disk: keys, policies, shops, the peer's configuration.

The run lives in a temporary directory that is removed at the end. Nothing of the checkout's
own ``keys/``, ``data/`` or ``policies/shops/`` is used or touched: the catalogue is copied,
the bench shops are written next to it, and the key ring is created under a master key drawn
for the run, exactly as an operator would (``gateway keys init``, ``gateway shops secret``).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from joserfc.jwk import ECKey, RSAKey

REPO = Path(__file__).resolve().parent.parent
PEOPLE = ("li-lei", "han-meimei", "alex-morgan")
# Never contacted: the benchmark reads the code from the redirect and stops there.
REDIRECT_URI = "http://127.0.0.1:9/callback"
SCOPE = "openid profile email phone address"
BENCH_SHOP = "bench-shop"
JWE_SHOP = "bench-jwe-shop"
PEER_CLIENT = "bench-peer-shop"
JWE_ALG, JWE_ENC = "ECDH-ES+A256KW", "A256GCM"


@dataclass(frozen=True, slots=True)
class ClientCredentials:
    """A relying party as the load generator plays it."""

    client_id: str
    secret: str = field(repr=False)
    redirect_uri: str = REDIRECT_URI
    scope: str = SCOPE


@dataclass(slots=True)
class Workspace:
    root: Path
    run_id: str
    redis_url: str
    master_key: str = field(repr=False)
    log_level: str = "INFO"
    shop: ClientCredentials | None = None
    jwe_shop: ClientCredentials | None = None
    jwe_private_key: dict[str, Any] = field(default_factory=dict, repr=False)
    peer_client: ClientCredentials | None = None

    @property
    def keys_dir(self) -> Path:
        return self.root / "keys"

    @property
    def policies_dir(self) -> Path:
        return self.root / "policies"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def peer_config_file(self) -> Path:
        return self.root / "peer" / "config.json"

    @property
    def key_prefix(self) -> str:
        """Every Redis key of the run starts with this; cleaning up removes exactly these."""
        return f"cgperf:{self.run_id}:"

    @property
    def gateway_prefix(self) -> str:
        return f"{self.key_prefix}gw:"

    @property
    def peer_prefix(self) -> str:
        return f"{self.key_prefix}peer:"

    @property
    def audit_prefix(self) -> str:
        return f"{self.key_prefix}audit:"

    def gateway_env(self, issuer: str, redis_url: str | None = None) -> dict[str, str]:
        """The process environment of a gateway for this run (no inherited GATEWAY_* value)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        env.update({
            "GATEWAY_ISSUER": issuer,
            "GATEWAY_REDIS_URL": redis_url or self.redis_url,
            "GATEWAY_REDIS_KEY_PREFIX": self.gateway_prefix,
            "GATEWAY_KEYS_DIR": str(self.keys_dir),
            "GATEWAY_POLICIES_DIR": str(self.policies_dir),
            "GATEWAY_DATA_DIR": str(self.data_dir),
            "GATEWAY_DEMO": "true",  # the demo provider is the upstream every login goes through
            "GATEWAY_MASTER_KEY": self.master_key,
            # Codes are minted before a token cell starts, so they must outlive the default 60 s.
            "GATEWAY_CODE_TTL": "600",
            # Every simulated person signs in from loopback: the per-IP limit stays on (its
            # round trip is part of what is measured) with room for the whole run.
            "GATEWAY_RATE_LIMIT_AUTHORIZE_PER_IP": '{"count": 1000000, "per_seconds": 1, "burst": 1000000}',
            "GATEWAY_LOG_LEVEL": self.log_level,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")])),
        })
        return env

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def gateway_command() -> list[str]:
    """The ``gateway`` console script of this interpreter's environment."""
    script = Path(sys.executable).parent / "gateway"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from gateway.cli import main; main()"]


def _shop_file(client_id: str, name: str, extra: dict[str, Any]) -> dict[str, Any]:
    """The demo shop's file (its policy uses every transform), adapted to the bench."""
    demo = yaml.safe_load((REPO / "policies" / "shops" / "demo-shop.yaml").read_text(encoding="utf-8"))
    demo.update({
        "client_id": client_id,
        "name": name,
        "name_zh": name,
        "redirect_uris": [REDIRECT_URI],
        "post_logout_redirect_uris": ["http://127.0.0.1:9/"],
        "token_endpoint_auth_method": "client_secret_basic",
        "scopes": ["openid", "profile", "email", "phone", "address"],
    })
    demo.update(extra)
    return dict(demo)


def _run_gateway_cli(workspace: Workspace, *args: str) -> str:
    env = workspace.gateway_env("http://127.0.0.1:1")
    result = subprocess.run(  # noqa: S603 - our own console script with fixed arguments
        [*gateway_command(), *args], env=env, cwd=workspace.root, capture_output=True, text=True,
        timeout=120, check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"gateway {' '.join(args)} failed: {result.stderr.strip() or result.stdout}")
    return result.stdout.strip()


def _peer_accounts() -> dict[str, dict[str, Any]]:
    """The demo people as OpenID claims, so the peer serves the same data the gateway holds."""
    from gateway.upstream.demo import DEMO_PEOPLE

    accounts: dict[str, dict[str, Any]] = {}
    for person in DEMO_PEOPLE:
        profile = person.profile
        claims: dict[str, Any] = {
            "name": profile.get("real_name", person.display_name),
            "nickname": profile.get("nickname"),
            "picture": profile.get("avatar"),
            "gender": profile.get("gender"),
            "birthdate": profile.get("birthdate"),
            "email": profile.get("email"),
            "email_verified": True,
            "phone_number": profile.get("phone"),
            "phone_number_verified": "phone" in profile,
            "address": profile.get("address"),
        }
        accounts[person.key] = {k: v for k, v in claims.items() if v is not None}
    return accounts


def _write_peer_config(workspace: Workspace) -> None:
    client = workspace.peer_client
    if client is None:
        raise RuntimeError("peer client not created")
    signing = [
        ECKey.generate_key("P-256", parameters={"kid": "peer-es256", "use": "sig", "alg": "ES256"},
                           private=True).as_dict(private=True),
        RSAKey.generate_key(2048, parameters={"kid": "peer-rs256", "use": "sig", "alg": "RS256"},
                            private=True).as_dict(private=True),
    ]
    config = {
        "clients": [{
            "client_id": client.client_id,
            "client_secret": client.secret,
            "redirect_uris": [client.redirect_uri],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "client_secret_basic",
            # Same signing algorithm as the gateway's default, so ID tokens cost the same.
            "id_token_signed_response_alg": "ES256",
        }],
        "accounts": _peer_accounts(),
        "jwks": {"keys": signing},
        "cookieKeys": [secrets.token_urlsafe(32), secrets.token_urlsafe(32)],
    }
    workspace.peer_config_file.parent.mkdir(parents=True, exist_ok=True)
    workspace.peer_config_file.write_text(json.dumps(config, indent=2), encoding="utf-8")
    workspace.peer_config_file.chmod(0o600)


def create_workspace(redis_url: str, log_level: str = "INFO") -> Workspace:
    """Lay out a fresh run: policies with the bench shops, a sealed key ring, client secrets."""
    root = Path(tempfile.mkdtemp(prefix="cgperf-"))
    workspace = Workspace(root=root, run_id=secrets.token_hex(4), redis_url=redis_url,
                          master_key=secrets.token_hex(32), log_level=log_level)
    try:
        for directory in (workspace.keys_dir, workspace.policies_dir / "shops", workspace.data_dir,
                          workspace.logs_dir):
            directory.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / "policies" / "catalogue.yaml", workspace.policies_dir / "catalogue.yaml")

        encryption_key = ECKey.generate_key(
            "P-256", parameters={"kid": "bench-enc", "use": "enc", "alg": JWE_ALG}, private=True)
        workspace.jwe_private_key = encryption_key.as_dict(private=True)
        shops = {
            BENCH_SHOP: _shop_file(BENCH_SHOP, "Bench Shop", {}),
            JWE_SHOP: _shop_file(JWE_SHOP, "Bench Shop (encrypted userinfo)", {
                "userinfo_encrypted_response_alg": JWE_ALG,
                "userinfo_encrypted_response_enc": JWE_ENC,
                "jwks": {"keys": [encryption_key.as_dict(private=False)]},
            }),
        }
        for client_id, config in shops.items():
            (workspace.policies_dir / "shops" / f"{client_id}.yaml").write_text(
                yaml.safe_dump(config, allow_unicode=True, sort_keys=False), encoding="utf-8")

        _run_gateway_cli(workspace, "keys", "init")
        _run_gateway_cli(workspace, "policy", "check")
        for client_id in (BENCH_SHOP, JWE_SHOP):
            secret = _run_gateway_cli(workspace, "shops", "secret", client_id)
            if client_id == BENCH_SHOP:
                workspace.shop = ClientCredentials(client_id, secret)
            else:
                workspace.jwe_shop = ClientCredentials(client_id, secret)
        workspace.peer_client = ClientCredentials(PEER_CLIENT, secrets.token_urlsafe(32))
        _write_peer_config(workspace)
    except BaseException:
        workspace.cleanup()
        raise
    return workspace
