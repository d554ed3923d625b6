"""The item catalogue as the model sees it: a fixed order of item ids and their texts."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

from common.schema import Item, Review
from common.text import item_text


class Catalogue:
    """Items in a fixed order (sorted ids); row ``i`` of every score matrix is ``ids[i]``."""

    def __init__(self, items: Mapping[str, Item]) -> None:
        if not items:
            raise ValueError("the item catalogue is empty; pass an items file with at least one item.")
        self.items = dict(items)
        self.ids: tuple[str, ...] = tuple(sorted(items))
        self.index: dict[str, int] = {item_id: i for i, item_id in enumerate(self.ids)}

    def __len__(self) -> int:
        return len(self.ids)

    def texts(self) -> list[str]:
        """Item-tower input text of every item, in catalogue order."""
        return [item_text(self.items[i]) for i in self.ids]

    def rows(self, item_ids: Iterable[str]) -> list[int]:
        """Catalogue rows of the given item ids (unknown ids are skipped)."""
        return [self.index[i] for i in item_ids if i in self.index]

    def interactions(
        self, histories: Sequence[Sequence[Review]], weight: Callable[[Review], float] | None = None
    ) -> np.ndarray:
        """[users, items] matrix: row u marks the items of ``histories[u]`` with 1, or with ``weight``
        of the item's latest review in the history."""
        matrix = np.zeros((len(histories), len(self)), dtype=np.float64)
        for row, reviews in enumerate(histories):
            if weight is None:
                matrix[row, self.rows(r.item_id for r in reviews)] = 1.0
                continue
            for review in reviews:
                if review.item_id in self.index:
                    matrix[row, self.index[review.item_id]] = weight(review)
        return matrix
