"""A released per-item vector whose size does not grow with the catalogue: exact up to
``release-width`` items, a count sketch beyond (Charikar, Chen & Farach-Colton, ICALP 2002).

Exact (catalogue <= width): entry i is item i. Sketched: ``SKETCH_ROWS`` rows of width // rows
buckets; item i adds s_r(i) x value to bucket h_r(i) of every row r, with h and s from a public
keyed hash of the item id (the server and every device compute the same), and the server reads
item i back as the median over rows of s_r(i) x bucket. A user's contribution is clipped to L2
norm sqrt(rows) x their per-item bound (colliding items could otherwise add up in one bucket), so
the sensitivity is known from public settings alone. Decoding is post-processing of the release.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

SKETCH_ROWS = 3


@dataclass(frozen=True)
class ReleaseLayout:
    """Where each item's value goes in the released vector."""

    item_ids: tuple[str, ...]
    width: int

    @property
    def sketched(self) -> bool:
        return len(self.item_ids) > self.width

    @property
    def rows(self) -> int:
        """How many entries one item touches."""
        return SKETCH_ROWS if self.sketched else 1

    @property
    def length(self) -> int:
        """Entries of the released vector (per statistic)."""
        return (self.width // SKETCH_ROWS) * SKETCH_ROWS if self.sketched else len(self.item_ids)

    @cached_property
    def slots(self) -> tuple[np.ndarray, np.ndarray]:
        """([items, rows] entry index, [items, rows] sign) of every item."""
        count = len(self.item_ids)
        if not self.sketched:
            return np.arange(count)[:, None], np.ones((count, 1))
        buckets = self.width // SKETCH_ROWS
        index, sign = np.zeros((count, SKETCH_ROWS), dtype=np.int64), np.zeros((count, SKETCH_ROWS))
        for i, item in enumerate(self.item_ids):
            digest = hashlib.blake2b(
                item.encode("utf-8"), digest_size=8 * SKETCH_ROWS, person=b"privrec-sketch"
            ).digest()
            for r in range(SKETCH_ROWS):
                word = int.from_bytes(digest[8 * r : 8 * r + 8], "little")
                index[i, r] = r * buckets + (word >> 1) % buckets
                sign[i, r] = 1.0 if word & 1 else -1.0
        return index, sign

    def encode(self, rows: Sequence[int], values: Sequence[float], bound: float) -> np.ndarray:
        """One user's vector for catalogue ``rows`` carrying ``values`` (each |value| <= 1), clipped to
        L2 norm sqrt(rows per item) x ``bound``, as :func:`sensitivity_factor` promises."""
        vector = np.zeros(self.length)
        index, sign = self.slots
        for row, value in zip(rows, values, strict=True):
            np.add.at(vector, index[row], sign[row] * value)
        limit = math.sqrt(self.rows) * bound
        norm = float(np.linalg.norm(vector))
        return vector * (limit / norm) if norm > limit else vector

    def decode(self, vector: np.ndarray) -> np.ndarray:
        """Per-item values read back from a released vector (the median over the sketch's rows)."""
        index, sign = self.slots
        return np.median(vector[index] * sign, axis=1)


def sensitivity_factor(layout: ReleaseLayout) -> float:
    """How much the sketch multiplies a user's L2 bound: sqrt(rows per item)."""
    return math.sqrt(layout.rows)
