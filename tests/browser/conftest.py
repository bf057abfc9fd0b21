"""A live gateway, the demo shop and headless Chromium (Debian's, driven by Playwright).

The browser must be there: these tests fail, not skip, when Chromium is missing (CI
installs it with apt). Screenshots go to ``test-output/screenshots/<language>/``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.app import create_app
from gateway.audit.staff import new_staff_token
from gateway.config import Settings
from gateway.demoshop import DEMO_SHOP_ID, create_demo_shop
from gateway.oidc.clients import issue_client_secret
from gateway.store import Store
from tests.conftest import REPO_POLICIES
from tests.live import free_port, serve_in_thread, stop

CHROMIUM = os.environ.get("GATEWAY_TEST_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-output" / "screenshots"


@dataclass
class DemoSite:
    gateway: str
    shop: str
    app: Any
    staff_token: str


@pytest.fixture
def demo_site(make_settings: Callable[..., Settings], store: Store, policies_dir: Path,
              keys_dir: Path) -> Iterator[DemoSite]:
    gateway_port, shop_port = free_port(), free_port()
    gateway_url, shop_url = f"http://127.0.0.1:{gateway_port}", f"http://127.0.0.1:{shop_port}"
    shop_file = yaml.safe_load((REPO_POLICIES / "shops" / "demo-shop.yaml").read_text(encoding="utf-8"))
    shop_file["redirect_uris"] = [f"{shop_url}/callback"]
    shop_file["post_logout_redirect_uris"] = [f"{shop_url}/"]
    (policies_dir / "shops" / "demo-shop.yaml").write_text(yaml.safe_dump(shop_file, allow_unicode=True),
                                                           encoding="utf-8")
    secret = issue_client_secret(keys_dir, DEMO_SHOP_ID)
    staff_token, digest = new_staff_token()
    app = create_app(make_settings(issuer=gateway_url, staff=[
        {"id": "compliance-officer", "role": "admin", "token_sha256": digest}]), store=store)
    running = [serve_in_thread(app, gateway_port),
               serve_in_thread(create_demo_shop(issuer=gateway_url, base_url=shop_url, client_secret=secret),
                     shop_port)]
    yield DemoSite(gateway_url, shop_url, app, staff_token)
    for server, thread in running:
        stop(server, thread)


# Module scope, not session: Playwright's sync API keeps an event loop running on the main
# thread while it is open, and every later test that calls asyncio.run() would fail.
@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium is required for the browser tests and was not found at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield browser
        browser.close()


@pytest.fixture
def screenshot() -> Callable[[Any, str, str], None]:
    def take(page: Any, language: str, name: str) -> None:
        folder = SCREENSHOTS / language
        folder.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(folder / f"{name}.png"), full_page=True)

    return take
