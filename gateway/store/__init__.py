"""The Redis connection, key naming and atomic single-use operations.

Nothing here knows what a token or a consent means; services in other packages give the
values their meaning.
"""

from gateway.store.atomic import ConsumeOutcome, ConsumeResult
from gateway.store.connection import Store, open_store
from gateway.store.keys import KeySpace

__all__ = ["ConsumeOutcome", "ConsumeResult", "KeySpace", "Store", "open_store"]
