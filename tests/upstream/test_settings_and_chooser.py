"""Provider settings (TOML, secrets by reference), start-up checks, and the chooser page."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import respx
import yaml
from starlette.testclient import TestClient

from gateway.config import load_settings
from gateway.errors import ConfigError
from gateway.upstream.profile import CATALOGUE_FIELDS, NORMALISERS
from tests.conftest import REPO_POLICIES, Browser, ShopHandle, authorize_params, pkce_pair
from tests.upstream.conftest import begin

LOGOS = Path(__file__).resolve().parents[2] / "gateway" / "web" / "static" / "logos"

TOML = '''
issuer = "https://gateway.example"

[[providers]]
kind = "wechat"
product = "website"
id = "wechat-web"
name = "WeChat"
name_zh = "微信"
app_id = "wx0123456789abcdef"
secret = { env = "WECHAT_WEB_SECRET" }

[[providers]]
kind = "wechat"
product = "mini_program"
id = "shop-mp"
name = "Shop mini program"
app_id = "wx1111222233334444"
secret = { file = "wechat-mp.secret" }
shops = ["shop-a"]

[[providers]]
kind = "alipay"
id = "alipay"
name = "Alipay"
app_id = "2021000123456789"
app_private_key = { file = "alipay/app-private.pem" }
alipay_public_key = { file = "alipay/alipay-public.txt" }
sandbox = true

[[providers]]
kind = "oauth2"
preset = "github"
id = "github"
name = "GitHub"
client_id = "Iv1.abc"
client_secret = { env = "GITHUB_SECRET" }

[[providers]]
kind = "oidc"
id = "corp"
name = "Corp SSO"
issuer = "https://sso.corp.example/realms/staff"
client_id = "gateway"
client_secret = { env = "CORP_SECRET" }
fields = { nickname = ["preferred_username"], phone = [] }

[[providers]]
kind = "oidc"
id = "partner"
name = "Partner"
issuer = "https://id.partner.example"
client_id = "gateway"
client_secret = { env = "PARTNER_SECRET" }
enabled = false
'''


def test_several_providers_of_each_kind_load_from_toml(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(TOML, encoding="utf-8")
    monkeypatch.setenv("GATEWAY_CONFIG", str(config))
    settings = load_settings()
    assert [p.id for p in settings.providers] == ["wechat-web", "shop-mp", "alipay", "github", "corp",
                                                  "partner"]
    assert settings.providers[0].kind == "wechat" and settings.providers[0].name_zh == "微信"
    assert settings.upstream_timeout == 10.0 and settings.upstream_retries == 1


@pytest.mark.parametrize(("provider", "message"), [
    ({"kind": "oidc", "id": "x1", "name": "X", "issuer": "http://idp.example", "client_id": "c",
      "client_secret": {"env": "X"}}, "https"),
    ({"kind": "oidc", "id": "x1", "name": "X", "issuer": "https://idp.example", "client_id": "c",
      "client_secret": "written-in-the-file"}, "client_secret"),
    ({"kind": "oidc", "id": "x1", "name": "X", "issuer": "https://idp.example", "client_id": "c",
      "client_secret": {"file": "../etc/passwd"}}, "file"),
    ({"kind": "oidc", "id": "x1", "name": "X", "issuer": "https://idp.example", "client_id": "c",
      "client_secret": {"env": "A", "file": "b"}}, "exactly one"),
    ({"kind": "oidc", "id": "x1", "name": "X", "issuer": "https://idp.example", "client_id": "c",
      "client_secret": {"env": "X"}, "scopes": ["profile"]}, "openid"),
    ({"kind": "oidc", "id": "x1", "name": "X", "issuer": "https://idp.example", "client_id": "c",
      "client_secret": {"env": "X"}, "id_token_algorithms": ["HS256"]}, "id_token_algorithms"),
    ({"kind": "wechat", "product": "mini_program", "id": "mp", "name": "MP", "app_id": "wx1234567890",
      "secret": {"env": "X"}}, "shops"),
    ({"kind": "wechat", "product": "website", "id": "web", "name": "W", "app_id": "wx1234567890",
      "secret": {"env": "X"}, "shops": ["shop-a"]}, "mini programs only"),
    ({"kind": "oauth2", "id": "o2", "name": "O", "client_id": "c", "client_secret": {"env": "X"}},
     "required without a preset"),
    ({"kind": "saml", "id": "s", "name": "S"}, "providers"),
    ({"kind": "oauth2", "preset": "github", "id": "demo", "name": "D", "client_id": "c",
      "client_secret": {"env": "X"}}, "reserved"),
])
def test_bad_provider_settings_are_refused(provider: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=f"(?i){message}") as caught:
        load_settings(providers=[provider])
    assert "\n" not in str(caught.value)


def test_duplicate_provider_ids_are_refused() -> None:
    github = {"kind": "oauth2", "preset": "github", "id": "gh", "name": "GitHub", "client_id": "c",
              "client_secret": {"env": "X"}}
    with pytest.raises(ConfigError, match="used twice"):
        load_settings(providers=[github, github])


@pytest.fixture
def github_settings() -> dict[str, Any]:
    return {"kind": "oauth2", "preset": "github", "id": "github", "name": "GitHub", "client_id": "c",
            "client_secret": {"env": "CG_TEST_GITHUB_SECRET"}}


def test_secret_from_the_environment(upstream_client: Callable[..., TestClient], shop: ShopHandle,
                                     github_settings: dict[str, Any],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CG_TEST_GITHUB_SECRET", "from-env")
    client = upstream_client([github_settings])
    with respx.mock as mock:
        token = mock.post("https://github.com/login/oauth/access_token").mock(
            return_value=httpx.Response(200, json={"error": "bad_verification_code"}))
        sign_in = begin(client, shop, "github")
        sign_in.callback(code="c", state=sign_in.state)
    assert parse_qs(token.calls.last.request.content.decode())["client_secret"] == ["from-env"]


def test_missing_secret_stops_start_up_naming_it(upstream_client: Callable[..., TestClient],
                                                 shop: ShopHandle, github_settings: dict[str, Any],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CG_TEST_GITHUB_SECRET", raising=False)
    with pytest.raises(ConfigError, match="CG_TEST_GITHUB_SECRET"):
        upstream_client([github_settings])
    with pytest.raises(ConfigError, match=r"no-such\.secret"):
        upstream_client([{**github_settings, "client_secret": {"file": "no-such.secret"}}])


def test_unknown_mapped_field_or_logo_stops_start_up(upstream_client: Callable[..., TestClient],
                                                     shop: ShopHandle, github_settings: dict[str, Any],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CG_TEST_GITHUB_SECRET", "s")
    with pytest.raises(ConfigError, match="not catalogue fields"):
        upstream_client([{**github_settings, "fields": {"openid": ["id"]}}])
    with pytest.raises(ConfigError, match="logo"):
        upstream_client([{**github_settings, "logo": "no-such-logo"}])


def test_invalid_alipay_key_stops_start_up(upstream_client: Callable[..., TestClient], shop: ShopHandle,
                                           write_secret: Callable[..., dict[str, str]]) -> None:
    with pytest.raises(ConfigError, match="app_private_key"):
        upstream_client([{"kind": "alipay", "id": "alipay", "name": "Alipay", "app_id": "2021000123456789",
                          "app_private_key": write_secret("bad.pem", "not a key"),
                          "alipay_public_key": write_secret("bad.pub", "not a key")}])


def test_chooser_lists_enabled_providers_with_names_and_logos(
    upstream_client: Callable[..., TestClient], shop: ShopHandle,
    write_secret: Callable[..., dict[str, str]],
) -> None:
    secret = write_secret("chooser.secret", "s")
    client = upstream_client([
        {"kind": "oauth2", "preset": "github", "id": "github", "name": "GitHub", "client_id": "c",
         "client_secret": secret},
        {"kind": "wechat", "product": "website", "id": "wechat-web", "name": "WeChat", "name_zh": "微信",
         "app_id": "wx0123456789abcdef", "secret": secret},
        {"kind": "wechat", "product": "mini_program", "id": "shop-mp", "name": "Mini",
         "app_id": "wx1111222233334444", "secret": secret, "shops": ["shop-a"]},
        {"kind": "oidc", "id": "off", "name": "Switched off", "issuer": "https://id.example",
         "client_id": "c", "client_secret": secret, "enabled": False},
    ])
    _, challenge = pkce_pair()
    query = "&".join(f"{k}={v}" for k, v in authorize_params(shop, challenge).items())
    english = Browser(client).follow(f"/authorize?{query}&ui_locales=en")  # type: ignore[arg-type]
    listed = re.findall(r'href="/upstream/([a-z0-9-]+)/start', english.text)
    assert listed == ["demo", "github", "wechat-web"]  # no mini program, nothing disabled
    assert '<img src="/static/logos/github.svg"' in english.text and "WeChat" in english.text
    chinese = Browser(client).follow(f"/authorize?{query}&ui_locales=zh-CN")  # type: ignore[arg-type]
    assert "微信" in chinese.text
    assert client.get("/static/logos/wechat.svg").headers["content-type"].startswith("image/svg+xml")


def test_every_default_logo_is_shipped() -> None:
    for name in ("wechat", "alipay", "github", "openid", "oauth", "demo"):
        svg = (LOGOS / f"{name}.svg").read_text(encoding="utf-8")
        assert svg.startswith("<svg") and "<script" not in svg


def test_connectors_only_fill_catalogue_fields() -> None:
    catalogue = yaml.safe_load((REPO_POLICIES / "catalogue.yaml").read_text(encoding="utf-8"))
    assert set(NORMALISERS) == CATALOGUE_FIELDS
    assert CATALOGUE_FIELDS <= set(catalogue["fields"])
