"""On-device personalisation: item neighbours fitted on the device's own users, never sent.

After the federation's rounds each device adds to the global model's scores a neighbourhood term
that only it can compute: for a user with training items x_u (0/1 over the catalogue), the scores
x_u @ S, where S mixes two item-item similarities (zero diagonal):

* the cosine of the frozen encoder's item vectors (public item metadata: costs no privacy at all);
* the cosine co-occurrence of items among this device's own users' training histories (item-kNN
  fitted on the device; the histories stay on it).

Each part is divided by its standard deviation over the scored users, mixed with ``personal-mix``
(the text share), divided again and added with ``personal-weight`` (auto, as measured: 4 over the
zero-shot towers of distributed DP, 0.5 over towers trained by FedAvg without DP, where 4 hurts). S is never
formed: both parts are products
of thin factors (items x dimensions, device users x items), so memory grows with the
catalogue, not with its square. Nothing here is exchanged, so it costs nothing against the
server's view whatever the DP mode; the held-out items are never in the histories it reads. (With
``evaluation = "server"``, a research shortcut, the server's copy of the data plays one device.)
Measured by ``scripts/explore_personal.py`` and ``scripts/benchmark_federation_dp.py``.
"""

from __future__ import annotations

import numpy as np
import torch

from common.catalogue import Catalogue
from common.fusion import unit
from common.schema import Review


class TextNeighbours:
    """x @ S for S the cosine of the item vectors with zero diagonal: (x @ U) @ U^T - x, U unit rows."""

    def __init__(self, pooled_items: torch.Tensor) -> None:
        self.unit = torch.nn.functional.normalize(pooled_items.detach().double().cpu(), dim=-1).numpy()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (x @ self.unit) @ self.unit.T - x


class CooccurrenceNeighbours:
    """x @ S for S_ij = G_ij / sqrt(c_i c_j) with G = X^T X over the device's users (c = diag G) and
    zero diagonal: ((x / n) @ X^T) @ X / n - x [c > 0], n = sqrt(max(c, 1))."""

    def __init__(self, history: np.ndarray) -> None:
        self.history = history
        counts = history.sum(axis=0)
        self.norm, self.seen = np.sqrt(np.maximum(counts, 1.0)), counts > 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ((x / self.norm) @ self.history.T) @ self.history / self.norm - x * self.seen


class PersonalNeighbours:
    """The device's item-neighbour scores for its users, from their training histories only."""

    def __init__(
        self, catalogue: Catalogue, pooled_items: torch.Tensor, train: dict[str, list[Review]], *, mix: float
    ) -> None:
        self.catalogue = catalogue
        self.parts = [
            (share, make())
            for share, make in (
                (mix, lambda: TextNeighbours(pooled_items)),
                (1.0 - mix, lambda: CooccurrenceNeighbours(catalogue.interactions(list(train.values())))),
            )
            if share > 0
        ]

    def scores(self, history: np.ndarray) -> np.ndarray:
        """[users, items] neighbour scores of [users, items] (weighted) histories, unit standard deviation."""
        return unit(np.sum([share * unit(part(history)) for share, part in self.parts], axis=0))
