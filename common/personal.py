"""On-device personalisation: item neighbours fitted on the device's own users, never sent.

After the federation's rounds each device adds to the global model's scores a neighbourhood term
that only it can compute: for a user with training items x_u (0/1 over the catalogue), the scores
x_u @ S, where S mixes two item-item similarities:

* the cosine of the frozen encoder's item vectors (public item metadata: costs no privacy at all);
* the cosine co-occurrence of items among this device's own users' training histories (item-kNN
  fitted on the device; the histories and S stay on it).

Each part is divided by its standard deviation over the scored users, mixed with ``personal-mix``
(the text share), divided again and added with ``personal-weight``. Nothing here is exchanged,
so it costs nothing against the server's view whatever the DP mode; the held-out items are never
in the histories it reads. Measured by ``scripts/explore_personal.py`` and
``scripts/benchmark_federation_dp.py``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from common.catalogue import Catalogue
from common.schema import Review


def _unit(scores: np.ndarray) -> np.ndarray:
    scale = float(scores.std())
    return scores / scale if scale > 0 else np.zeros_like(scores)


def text_similarity(pooled: torch.Tensor) -> np.ndarray:
    """[items, items] cosine of the frozen item vectors, zero diagonal."""
    unit = torch.nn.functional.normalize(pooled.detach().float().cpu(), dim=-1).numpy()
    sim = unit @ unit.T
    np.fill_diagonal(sim, 0.0)
    return sim


def cooccurrence_similarity(history: np.ndarray) -> np.ndarray:
    """[items, items] cosine co-occurrence of a 0/1 [users, items] history matrix, zero diagonal."""
    gram = history.T @ history
    norm = np.sqrt(np.maximum(np.diag(gram), 1.0))
    sim = gram / norm[:, None] / norm[None, :]
    np.fill_diagonal(sim, 0.0)
    return sim


class PersonalNeighbours:
    """The device's item-neighbour scores for its users, from their training histories only."""

    def __init__(self, catalogue: Catalogue, pooled_items: torch.Tensor,
                 train: dict[str, list[Review]], *, mix: float) -> None:
        self.catalogue, self.mix = catalogue, mix
        self.text = text_similarity(pooled_items) if mix > 0 else None
        self.cooc = (cooccurrence_similarity(catalogue.interactions(list(train.values())))
                     if mix < 1 else None)

    def scores(self, histories: Sequence[Sequence[Review]]) -> np.ndarray:
        """[users, items] neighbour scores of these histories, unit standard deviation."""
        x = self.catalogue.interactions(histories)
        parts = [(self.mix, self.text), (1.0 - self.mix, self.cooc)]
        return _unit(sum(share * _unit(x @ sim) for share, sim in parts if sim is not None))
