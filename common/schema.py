"""Plain, immutable records shared by every PrivRec module."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Review:
    """One user's rating and review of one item."""

    user_id: str
    item_id: str
    rating: float
    timestamp: int
    summary: str
    text: str
    reviewer_name: str | None = None


@dataclass(frozen=True)
class Item:
    """Catalogue metadata of one item."""

    item_id: str
    title: str
    categories: tuple[str, ...] = ()
    price: float | None = None
    brand: str | None = None
    description: str | None = None
