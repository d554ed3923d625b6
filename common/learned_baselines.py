"""Learned ID-based reference recommenders on the same split and protocol: BPR-MF and a SASRec-style
sequential model. Centralised and without DP: the bar the federated model is compared with.

Both train on the users' training reviews only, pick their epoch on validation NDCG@K (checked every
``check_every`` epochs, stopping after ``patience`` checks without gain) and score every user from
their training history, exactly as the other baselines. Neither can serve a user or an item it has
not seen in training (the cold start the text towers are for).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from common.catalogue import Catalogue
from common.metrics import NDCG, summarise
from common.split import Split


def _fit(
    model: nn.Module,
    step: Callable[[], float],
    score: Callable[[], np.ndarray],
    valid: Callable[[np.ndarray], float],
    *,
    epochs: int,
    check_every: int,
    patience: int,
) -> np.ndarray:
    """Train with ``step`` (one epoch) and return the scores of the epoch best on ``valid``."""
    best, best_state, since = float("-inf"), copy.deepcopy(model.state_dict()), 0
    for epoch in range(1, epochs + 1):
        model.train()
        step()
        if epoch % check_every == 0:
            model.eval()
            value = valid(score())
            if value > best:
                best, best_state, since = value, copy.deepcopy(model.state_dict()), 0
            else:
                since += 1
                if since >= patience:
                    break
    model.load_state_dict(best_state)
    model.eval()
    return score()


def _validator(users: Sequence[str], split: Split, catalogue: Catalogue, k: int) -> Callable[[np.ndarray], float]:
    from common.recommender import ranks_from_scores

    rows = [n for n, u in enumerate(users) if u in split.valid]
    valid_users = [users[n] for n in rows]
    return lambda scores: summarise(
        ranks_from_scores(scores[rows], valid_users, split, catalogue, target="valid"), k=k
    )[f"{NDCG}@{k}"]


class _MF(nn.Module):
    def __init__(self, users: int, items: int, dim: int) -> None:
        super().__init__()
        self.user = nn.Embedding(users, dim)
        self.item = nn.Embedding(items, dim)
        nn.init.normal_(self.user.weight, std=0.1)
        nn.init.normal_(self.item.weight, std=0.1)


def bpr_mf(
    split: Split,
    users: Sequence[str],
    catalogue: Catalogue,
    *,
    seed: int,
    k: int = 10,
    dim: int = 64,
    epochs: int = 200,
    lr: float = 5e-3,
    reg: float = 1e-4,
    batch: int = 1024,
) -> np.ndarray:
    """[users, items] scores of matrix factorisation trained with BPR (Rendle et al., UAI 2009):
    one uniformly drawn unseen item per training pair and epoch."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    index = {u: n for n, u in enumerate(users)}
    pairs = np.array(
        [
            (index[u], catalogue.index[r.item_id])
            for u in users
            for r in split.train.get(u, [])
            if r.item_id in catalogue.index
        ]
    )
    seen = {(u, i) for u, i in pairs.tolist()}
    model = _MF(len(users), len(catalogue), dim)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)

    def step() -> float:
        order = rng.permutation(len(pairs))
        negatives = rng.integers(0, len(catalogue), len(pairs))
        for n, (u, _item) in enumerate(pairs[order].tolist()):  # redraw the few that the user has seen
            while (u, int(negatives[n])) in seen:
                negatives[n] = rng.integers(0, len(catalogue))
        for start in range(0, len(pairs), batch):
            chosen = torch.as_tensor(pairs[order[start : start + batch]])
            u, i = model.user(chosen[:, 0]), model.item(chosen[:, 1])
            j = model.item(torch.as_tensor(negatives[start : start + batch]))
            loss = -nn.functional.logsigmoid((u * i).sum(1) - (u * j).sum(1)).mean()
            loss = loss + reg * (u.pow(2).sum() + i.pow(2).sum() + j.pow(2).sum()) / len(chosen)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        return float(loss.detach())

    def score() -> np.ndarray:
        with torch.no_grad():
            return (model.user.weight @ model.item.weight.T).numpy().astype(np.float64)

    return _fit(model, step, score, _validator(users, split, catalogue, k), epochs=epochs, check_every=5, patience=4)


class _SASRec(nn.Module):
    """Self-attentive next-item model (Kang & McAuley, ICDM 2018), small: item and position
    embeddings, a causal Transformer encoder, scores = last hidden state . item embeddings."""

    def __init__(self, items: int, dim: int, length: int, layers: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.item = nn.Embedding(items + 1, dim, padding_idx=0)  # row 0: padding, row r + 1: item r
        self.position = nn.Embedding(length, dim)
        layer = nn.TransformerEncoderLayer(dim, heads, dim * 2, dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, sequence: torch.Tensor) -> torch.Tensor:
        """[batch, length] item rows + 1 (0 = padding, left) -> [batch, length, items] logits."""
        length = sequence.shape[1]
        hidden = self.dropout(self.item(sequence) + self.position.weight[:length])
        causal = nn.Transformer.generate_square_subsequent_mask(length)
        hidden = self.norm(self.encoder(hidden, mask=causal, is_causal=True))
        return hidden @ self.item.weight[1:].T


def sasrec(
    split: Split,
    users: Sequence[str],
    catalogue: Catalogue,
    *,
    seed: int,
    k: int = 10,
    dim: int = 64,
    length: int = 20,
    layers: int = 2,
    heads: int = 2,
    dropout: float = 0.3,
    epochs: int = 200,
    lr: float = 1e-3,
    batch: int = 128,
) -> np.ndarray:
    """[users, items] scores of a SASRec-style model trained on next-item prediction (full softmax
    over the catalogue) from each user's training reviews in time order."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    sequences = np.zeros((len(users), length + 1), dtype=np.int64)  # left-padded, last column = last item
    for n, user in enumerate(users):
        rows = [catalogue.index[r.item_id] + 1 for r in split.train.get(user, []) if r.item_id in catalogue.index]
        rows = rows[-(length + 1) :]
        if rows:
            sequences[n, -len(rows) :] = rows
    model = _SASRec(len(catalogue), dim, length, layers, heads, dropout)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    trainable = np.flatnonzero((sequences > 0).sum(1) >= 2)

    def step() -> float:
        order = rng.permutation(trainable)
        for start in range(0, len(order), batch):
            chosen = torch.as_tensor(sequences[order[start : start + batch]])
            inputs, targets = chosen[:, :-1], chosen[:, 1:] - 1  # -1: padding, ignored
            logits = model(inputs)
            loss = nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-1
            )
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        return float(loss.detach())

    def score() -> np.ndarray:
        with torch.no_grad():
            return model(torch.as_tensor(sequences[:, 1:]))[:, -1].numpy().astype(np.float64)

    return _fit(model, step, score, _validator(users, split, catalogue, k), epochs=epochs, check_every=5, patience=4)
