"""Several personalisation dimensions fused in one score, each a named, weighted part.

A user's score for an item is the sum of these parts (``Recommender.score_parts``), each measured
alone and in the fusion (``scripts/benchmark_recommender.py``), each off where it did not help:

* ``text``: the two towers' cosine over the temperature: what the user wrote against what the
  item is (the LoRA user tower);
* ``prior``: the per-item offsets (the federation's DP release of item counts, or trained);
* ``item-item``: the released EASE weights on the user's own head items (``release-head-items``);
* ``neighbours``: the device's own item neighbours (``common/personal.py``, ``personal-weight``);
* ``attributes``: the user's category, brand and price-band preferences from their own history,
  scored on every item (``attribute-weight``), computed on the device from public item metadata.

Ratings: every history-based part reads the user's history as a weighted vector, where a review
of ``LOW_STARS`` stars or fewer counts ``low-rating-weight`` (1 = as any other review, 0 = not at
all, negative = pushes similar items down), so a one-star review need not pull similar items up.
At weight 0 or below such reviews also leave the profile text (unless nothing else is left).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from common.catalogue import Catalogue
from common.schema import Review

LOW_STARS = 2.0
PARTS = ("text", "prior", "item-item", "neighbours", "attributes")
PRICE_BANDS = 4


def unit(scores: np.ndarray) -> np.ndarray:
    """``scores`` divided by their standard deviation (zeros when constant)."""
    scale = float(scores.std())
    return scores / scale if scale > 0 else np.zeros_like(scores)


def history_matrix(
    catalogue: Catalogue, histories: Sequence[Sequence[Review]], low_rating_weight: float = 1.0
) -> np.ndarray:
    """[users, items] history: 1 per reviewed item, ``low_rating_weight`` where it was rated
    ``LOW_STARS`` or fewer."""
    return catalogue.interactions(histories, lambda r: low_rating_weight if r.rating <= LOW_STARS else 1.0)


def profile_reviews(reviews: Sequence[Review], low_rating_weight: float) -> list[Review]:
    """The reviews whose text describes the user: all, or without the low-rated ones when they count
    for nothing or against (but never none when there were some)."""
    if low_rating_weight > 0:
        return list(reviews)
    liked = [r for r in reviews if r.rating > LOW_STARS]
    return liked or list(reviews)


@dataclass(frozen=True)
class Facet:
    """One item attribute (category, brand or price band) as a sparse [items, values] 0/1 matrix."""

    name: str
    values: tuple[str, ...]
    matrix: sparse.csr_matrix


class AttributePreferences:
    """A user's share of history items in each category, brand and price band, scored on every item.

    For facet F ([items, values], 0/1) and weighted history x: preference p = x @ F / sum(|x|), item
    scores p @ F^T (the share of the user's items that share the item's value). Each facet is divided
    by its standard deviation and the sum again. Sparse: memory grows with the catalogue, not with
    its square. Price bands are the quartiles of the catalogue's own prices (public metadata).
    """

    def __init__(self, catalogue: Catalogue) -> None:
        items = [catalogue.items[i] for i in catalogue.ids]
        prices = np.array([np.nan if i.price is None else i.price for i in items], dtype=float)
        self.edges = (
            np.nanquantile(prices, np.linspace(0, 1, PRICE_BANDS + 1)[1:-1])
            if np.isfinite(prices).any()
            else np.array([])
        )
        facets = [
            _facet("category", [item.categories for item in items]),
            _facet("brand", [(item.brand,) if item.brand else () for item in items]),
            _facet("price band", [() if np.isnan(p) else (self.band(p),) for p in prices]),
        ]
        self.facets = [f for f in facets if f.values]

    def band(self, price: float) -> str:
        """The catalogue price band of ``price``, as a range like '$6.50-$15.00'."""
        index = int(np.searchsorted(self.edges, price, side="right"))
        low = "$0" if index == 0 else f"${self.edges[index - 1]:.2f}"
        return f"{low}+" if index == len(self.edges) else f"{low}-${self.edges[index]:.2f}"

    def scores(self, history: np.ndarray) -> np.ndarray:
        """[users, items] preference scores of weighted histories, unit standard deviation."""
        mass = np.maximum(np.abs(history).sum(axis=1, keepdims=True), 1.0)
        shares = history / mass
        parts = [unit(np.asarray(f.matrix @ (f.matrix.T @ shares.T)).T) for f in self.facets]
        return unit(np.sum(parts, axis=0)) if parts else np.zeros_like(history)

    def matches(self, history: np.ndarray, item_row: int) -> list[tuple[str, str, float, int]]:
        """Where item ``item_row`` meets one user's weighted history: (facet, value, weight of the
        history items sharing it, history items), strongest first; only values the history has."""
        reviewed = int((history != 0).sum())
        found = []
        for facet in self.facets:
            row = facet.matrix.getrow(item_row)
            for column in row.indices:
                members = facet.matrix.getcol(column).toarray().ravel() > 0
                share = float(history[members].sum())
                if share > 0:
                    found.append((facet.name, facet.values[column], share, reviewed))
        return sorted(found, key=lambda m: -m[2])


def _facet(name: str, values_per_item: list[tuple[str, ...]]) -> Facet:
    values = tuple(sorted({v for vs in values_per_item for v in vs}))
    column = {v: c for c, v in enumerate(values)}
    rows = [r for r, vs in enumerate(values_per_item) for _ in vs]
    cols = [column[v] for vs in values_per_item for v in vs]
    matrix = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(values_per_item), len(values)))
    return Facet(name, values, matrix)
