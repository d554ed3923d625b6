"""Texts the towers read: a user's profile and an item's description."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from common.schema import Item, Review

ENTRY_SEPARATOR = " ; "


def price_band(price: float | None) -> str:
    """Coarse price words a language model can relate to ('budget', 'premium', ...)."""
    if price is None:
        return "unknown price"
    if price < 10:
        return "budget price"
    if price < 40:
        return "mid price"
    if price < 150:
        return "premium price"
    return "high-end price"


def item_text(item: Item) -> str:
    """Title, categories and price band of an item, for the item tower."""
    parts = [item.title]
    if item.categories:
        parts.append(", ".join(item.categories))
    if item.brand:
        parts.append(f"brand {item.brand}")
    parts.append(price_band(item.price))
    return " | ".join(parts)


def profile_text(
    reviews: Iterable[Review],
    items: Mapping[str, Item],
    *,
    style: str = "title-summary",
    exclude_item: str | None = None,
) -> str:
    """A user's profile: their reviews newest first, one entry each.

    ``title-summary`` entries read "item title (rating): review summary", which in a trial on
    real data beat raw review text with fewer tokens; ``review-text`` uses the review body.
    The caller truncates to the token budget, so the newest entries survive.
    """
    entries = []
    for review in sorted(reviews, key=lambda r: (r.timestamp, r.item_id), reverse=True):
        if review.item_id == exclude_item:
            continue
        if style == "review-text":
            entries.append(review.text or review.summary)
        else:
            item = items.get(review.item_id)
            title = item.title if item else review.item_id
            entries.append(f"{title} ({review.rating:.0f} stars): {review.summary}")
    return ENTRY_SEPARATOR.join(entries)
