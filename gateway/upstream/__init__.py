"""Connectors to the providers people sign in with (the gateway is their OAuth client)."""

from gateway.upstream.base import Connector, UpstreamError, UpstreamIdentity
from gateway.upstream.identities import IdentityService

__all__ = ["Connector", "IdentityService", "UpstreamError", "UpstreamIdentity"]
