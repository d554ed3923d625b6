"""Why an item was recommended: the score's parts, the user's own sentences and the attributes that
match it, and the user's own item most like it. Computed on the device, from the user's own text.

* parts: each fused dimension's contribution to the item's score (``common/fusion.py``); they add up
  to the score;
* sentences: the user's sentences (their reviews, or their description) whose user-tower vector is
  closest to the item's item-tower vector, with that cosine;
* attributes: the item's category, brand and price band where the user's own history shares them;
* like: the user's reviewed item closest to it in the frozen encoder's item space.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from common.fusion import history_matrix
from common.schema import Review

if TYPE_CHECKING:
    from common.recommender import Recommender

SENTENCES = 2  # sentences cited per item
_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")
_MIN_WORDS = 3


@dataclass(frozen=True)
class Explanation:
    """Why one item is in a user's list."""

    parts: dict[str, float]
    sentences: list[tuple[str, float]] = field(default_factory=list)
    attributes: list[str] = field(default_factory=list)
    like: str | None = None


def sentences_of(texts: Sequence[str]) -> list[str]:
    """The distinct sentences of ``texts`` with at least three words, in order."""
    seen: dict[str, None] = {}
    for text in texts:
        for sentence in _SPLIT.split(text or ""):
            sentence = sentence.strip()
            if len(sentence.split()) >= _MIN_WORDS:
                seen.setdefault(sentence, None)
    return list(seen)


@torch.no_grad()
def explain(
    recommender: Recommender,
    rows: Sequence[int],
    parts: dict[str, np.ndarray],
    *,
    reviews: Sequence[Review] = (),
    text: str = "",
) -> list[Explanation]:
    """One :class:`Explanation` per catalogue row in ``rows``, for one user given by their ``reviews``
    (history) or their ``text`` (a description); ``parts`` are that user's score parts ([items] each)."""
    catalogue, cfg = recommender.catalogue, recommender.cfg
    own = sentences_of([f"{r.summary}. {r.text}" for r in reviews] if reviews else [text])
    similarity = np.zeros((len(rows), 0))
    if own:
        model = recommender.model
        model.eval()
        items = model.encode_items(recommender.items.pooled)[list(rows)]
        similarity = (items @ recommender._encode_texts(own).T).cpu().numpy()  # both unit length
    history = history_matrix(catalogue, [list(reviews)], cfg.low_rating_weight)[0]
    reviewed = [catalogue.index[r.item_id] for r in reviews if r.item_id in catalogue.index]
    pooled = torch.nn.functional.normalize(recommender.items.pooled.detach().float().cpu(), dim=-1).numpy()
    out = []
    for n, row in enumerate(rows):
        best = np.argsort(-similarity[n], kind="stable")[:SENTENCES]
        attributes = [
            f"{facet} {value} ({weight:g} of your {total} reviewed items)"
            for facet, value, weight, total in recommender.attributes.matches(history, row)
        ]
        like = None
        if reviewed:
            closest = max(reviewed, key=lambda j: float(pooled[j] @ pooled[row]))
            like = catalogue.items[catalogue.ids[closest]].title
        out.append(
            Explanation(
                parts={name: float(part[row]) for name, part in parts.items()},
                sentences=[(own[i], float(similarity[n, i])) for i in best],
                attributes=attributes,
                like=like,
            )
        )
    return out
