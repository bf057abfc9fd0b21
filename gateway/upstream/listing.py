"""What the sign-in page shows of a provider: its name in each language and its logo."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Listing:
    provider_id: str
    name: str
    name_zh: str | None
    logo: str


class Listed:
    """The listing half of the :class:`~gateway.upstream.base.Connector` protocol."""

    def __init__(self, listing: Listing, available: Callable[[], bool] | None = None) -> None:
        self.listing = listing
        self._available = available

    @property
    def provider_id(self) -> str:
        return self.listing.provider_id

    @property
    def display_name(self) -> str:
        return self.listing.name

    @property
    def logo(self) -> str:
        return self.listing.logo

    def name_in(self, language: str) -> str:
        if language == "zh-CN" and self.listing.name_zh:
            return self.listing.name_zh
        return self.listing.name

    def offered_to(self, user_agent: str) -> bool:
        return True

    def available(self) -> bool:
        """False while the provider's circuit is open (gateway/upstream/isolation.py)."""
        return self._available is None or self._available()
