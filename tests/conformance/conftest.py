"""Fixtures for the conformance tests: the upstream tests' gateway-with-providers factory,
for the sections where the gateway is the client (mix-up, state, nonce, PKCE upstream)."""

from tests.upstream.conftest import upstream_client, write_secret

__all__ = ["upstream_client", "write_secret"]
