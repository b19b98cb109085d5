"""The fixed holdout: a deterministic split by item_id hash.

An item is in the holdout iff the first 8 bytes of sha256("holdout:" + item_id), read as
an integer, fall in the lowest `fraction` of the range. The same item is always on the
same side, whatever else is in the collection, so every model of every turn is scored on
the same items and a challenger is compared with the champion fairly.
"""

from __future__ import annotations

import hashlib

DEFAULT_FRACTION = 0.2


def _bucket(item_id: str) -> float:
    digest = hashlib.sha256(f"holdout:{item_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def is_holdout(item_id: str, fraction: float = DEFAULT_FRACTION) -> bool:
    """True when `item_id` belongs to the fixed holdout."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"holdout fraction must be in [0, 1), got {fraction}")
    return _bucket(str(item_id)) < fraction
