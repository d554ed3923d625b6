"""The recommender at work: a two-tower model with its tokenizer and catalogue, to train or rank.

One training example is one user: each step draws, for every user in the batch, one target item
from their training reviews and builds the profile from the others (see ``training-targets``).
A user's whole contribution stays inside one example, the natural unit for user-level DP.
"""

from __future__ import annotations

import functools
import logging
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from common.augment import Augmenter, EmbeddingNeighbours
from common.catalogue import Catalogue
from common.config import RunConfig
from common.fusion import AttributePreferences, history_matrix, profile_reviews, unit
from common.item_cache import cache_key, cached_pooled
from common.metrics import summarise, target_rank
from common.model import (
    ItemVectors,
    TwoTowerRecommender,
    build_model,
    load_checkpoint,
    load_tokenizer,
    load_trainable_state,
    pool_catalogue,
    resolve_device,
    trainable_state,
)
from common.personal import PersonalNeighbours
from common.ratings import predict, user_mean
from common.schema import Review
from common.split import Split
from common.text import profile_text

log = logging.getLogger(__name__)

_ITEM_CACHE: dict[tuple, ItemVectors] = {}


@dataclass(frozen=True)
class TrainResult:
    """What one bout of training did."""

    num_examples: int
    steps: int
    examples_seen: int
    mean_loss: float
    first_loss: float
    last_loss: float


def planned_steps(num_users: int, cfg: RunConfig) -> int:
    """Optimiser steps of one local round: ``local-steps``, or epochs x batches per epoch.

    Local DP has its own, from public settings only (the count reveals nothing of the client):
    ``dp-local-steps``, or epochs x 1/``dp-sample-rate``.
    """
    if cfg.dp == "local":
        return cfg.dp_local_steps or cfg.local_epochs * math.ceil(1 / cfg.dp_sample_rate - 1e-9)
    if cfg.local_steps > 0:
        return cfg.local_steps
    return cfg.local_epochs * math.ceil(num_users / cfg.batch_size)


class Recommender:
    """A fresh two-tower model on ``cfg``'s device, with tokenizer and cached item vectors."""

    def __init__(self, cfg: RunConfig, catalogue: Catalogue) -> None:
        self.cfg = cfg
        self.catalogue = catalogue
        self.device = resolve_device(cfg.device)
        self.model = build_model(cfg, num_items=len(catalogue)).to(self.device)
        self.tokenizer = load_tokenizer(cfg)
        self.items = _catalogue_vectors(self.model, self.tokenizer, catalogue, cfg)
        self._personal: tuple[Split, PersonalNeighbours] | None = None
        self.augmenter = _augmenter(cfg, self.model, self.tokenizer)

    # ----- the exchanged state ----------------------------------------------------------------
    def state(self) -> dict[str, torch.Tensor]:
        """The trainable tensors (LoRA + projections), detached on the CPU."""
        return trainable_state(self.model)

    def load_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Replace the trainable tensors; refuses wrong names, shapes or non-finite values."""
        load_trainable_state(self.model, state)

    def load_checkpoint(self, directory: Path) -> None:
        """Replace the trainable tensors with a saved checkpoint's (``checkpoints/best`` or ``last``)."""
        self.load_state(trainable_state(load_checkpoint(directory, self.cfg, num_items=len(self.catalogue))))

    # ----- training ---------------------------------------------------------------------------
    def train(
        self,
        users: Sequence[str],
        split: Split,
        *,
        rng: random.Random,
        steps: int | None = None,
        progress: bool = False,
    ) -> TrainResult:
        """AdamW on the trainable tensors over ``users``; returns loss statistics."""
        cfg = self.cfg
        users = [u for u in users if split.train.get(u)]
        if not users:
            raise ValueError("no users with training reviews on this client; nothing to train.")
        steps = planned_steps(len(users), cfg) if steps is None else steps
        optimiser = torch.optim.AdamW(
            [p for p in self.model.parameters() if p.requires_grad], lr=cfg.learning_rate, weight_decay=cfg.weight_decay
        )
        self.model.train()
        losses: list[float] = []
        order: list[str] = []
        seen = 0
        iterator = range(steps)
        if progress:
            from tqdm import tqdm

            iterator = tqdm(iterator, desc="train", unit="step", leave=False)
        for _ in iterator:
            if len(order) < cfg.batch_size:
                order.extend(rng.sample(users, len(users)))
            batch, order = order[: cfg.batch_size], order[cfg.batch_size :]
            seen += len(batch)
            loss = self._loss([split.train[u] for u in batch], rng)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            losses.append(float(loss.detach()))
        return TrainResult(
            num_examples=len(users),
            steps=steps,
            examples_seen=seen,
            mean_loss=float(np.mean(losses)),
            first_loss=losses[0],
            last_loss=losses[-1],
        )

    def _loss(self, histories: list[list[Review]], rng: random.Random, *, per_example: bool = False) -> torch.Tensor:
        """Softmax cross-entropy of each user's target over the whole catalogue.

        ``per_example`` runs the item tower once per example, as DP-SGD's per-example
        gradients need (same value, more compute).
        """
        profiles: list[list[Review]] = []
        targets: list[int] = []
        masked: list = []
        for row, reviews in enumerate(histories):
            profile, target = _example(reviews, self.cfg.training_targets, rng)
            profiles.append(profile)
            targets.append(self.catalogue.index[target])
            # Other items this user reviewed are not negatives.
            masked.extend((row, c) for c in self.catalogue.rows(r.item_id for r in reviews) if c != targets[-1])
        if self.augmenter is not None:
            profiles = self.augmenter.profiles(profiles, rng)
        items = self.model.encode_items(self.items.pooled, per_example=len(profiles) if per_example else 0)
        logits = self.model.scores(self._encode(profiles), items)
        if masked:
            rows, cols = zip(*masked, strict=True)
            index = (torch.tensor(rows, device=self.device), torch.tensor(cols, device=self.device))
            logits = logits.index_put(index, torch.tensor(float("-inf"), device=self.device))
        return torch.nn.functional.cross_entropy(logits, torch.tensor(targets, device=self.device))

    # ----- ranking ----------------------------------------------------------------------------
    @torch.no_grad()
    def scores(self, users: Sequence[str], split: Split, batch_size: int = 64) -> np.ndarray:
        """[users, items] scores from each user's full training profile: the sum of :meth:`score_parts`."""
        return np.sum(list(self.score_parts(users, split, batch_size).values()), axis=0)

    @torch.no_grad()
    def score_parts(self, users: Sequence[str], split: Split, batch_size: int = 64) -> dict[str, np.ndarray]:
        """Each personalisation dimension's weighted [users, items] part (see ``common/fusion.py``);
        the parts that are off are left out, the text part is always there."""
        self.model.eval()
        cfg = self.cfg
        histories = [split.train.get(u, []) for u in users]
        items = self.model.encode_items(self.items.pooled)
        chunks = [
            self.model.similarity(
                self._encode(
                    [profile_reviews(h, cfg.low_rating_weight) for h in histories[start : start + batch_size]]
                ),
                items,
            )
            .cpu()
            .numpy()
            for start in range(0, len(users), batch_size)
        ]
        parts = self._with_prior(np.concatenate(chunks) if chunks else np.zeros((0, len(self.catalogue))))
        if not len(users):
            return parts
        history = history_matrix(self.catalogue, histories, cfg.low_rating_weight)
        if self.model.item_item is not None:
            parts["item-item"] = self._item_item(history)
        if cfg.neighbour_weight > 0:
            parts["neighbours"] = cfg.neighbour_weight * self.personal(split).scores(history)
        if cfg.attribute_weight > 0:
            parts["attributes"] = cfg.attribute_weight * self.attributes.scores(history)
        return parts

    @torch.no_grad()
    def text_parts(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """The [texts, items] score parts of free-text profiles (cold start: no history, so only the
        text and prior parts)."""
        self.model.eval()
        items = self.model.encode_items(self.items.pooled)
        return self._with_prior(self.model.similarity(self._encode_texts(list(texts)), items).cpu().numpy())

    def _with_prior(self, text: np.ndarray) -> dict[str, np.ndarray]:
        """The text part and, where the model has item offsets, the prior part beside it."""
        parts = {"text": text}
        if self.model.item_bias is not None:
            parts["prior"] = np.broadcast_to(self.model.item_bias.per_item().detach().cpu().numpy(), text.shape)
        return parts

    @torch.no_grad()
    def predicted_stars(self, reviews: Sequence[Review]) -> np.ndarray | None:
        """Every item's predicted stars for a user with these training ``reviews`` (none: a new user at
        the federation's mean): the released item offsets on the user's own mean (``common/ratings.py``);
        None when the model carries no released ratings."""
        released = self.model.item_rating
        if released is None or float(released.mean) == 0.0:
            return None
        mean = float(released.mean)
        level = user_mean(reviews, mean, self.cfg.user_rating_shrinkage)
        return predict(level, released.offsets.cpu().numpy().astype(np.float64))

    def personal(self, split: Split) -> PersonalNeighbours:
        """The on-device item neighbours of ``split``'s users (the device's own; fitted once per split)."""
        if self._personal is None or self._personal[0] is not split:
            self._personal = (
                split,
                PersonalNeighbours(self.catalogue, self.items.pooled, split.train, mix=self.cfg.personal_mix),
            )
        return self._personal[1]

    @functools.cached_property
    def attributes(self) -> AttributePreferences:
        """The catalogue's category, brand and price-band facets (public metadata)."""
        return AttributePreferences(self.catalogue)

    def _item_item(self, history: np.ndarray) -> np.ndarray:
        """``ease-weight`` x the released item-item scores of the users' own (weighted) histories on
        the head items, divided by their standard deviation over these users (on the device: the
        histories and this scale never leave it)."""
        layer = self.model.item_item
        assert layer is not None  # only called when the model carries the released item-item weights
        extra = layer(torch.as_tensor(history, dtype=torch.float32, device=layer.weight.device)).cpu().numpy()
        scores = np.zeros_like(history)
        scores[:, layer.rows.long().cpu().numpy()] = self.cfg.ease_weight * unit(extra)
        return scores

    def evaluate(self, users: Sequence[str], split: Split, *, target: str = "valid") -> dict[str, float]:
        """HR@K, NDCG@K and MRR on the users' validation or test item over the whole catalogue."""
        ranks = self.ranks(users, split, target=target)
        metrics = summarise(ranks, k=self.cfg.eval_k)
        metrics["num-users"] = float(len(ranks))
        return metrics

    def ranks(self, users: Sequence[str], split: Split, *, target: str) -> np.ndarray:
        """Full-ranking rank of each user's held-out item (users without one are left out)."""
        held_out = _held_out(split, target)
        users = [u for u in users if u in held_out and held_out[u].item_id in self.catalogue.index]
        return ranks_from_scores(self.scores(users, split), users, split, self.catalogue, target=target)

    def _encode(self, profiles: list[list[Review]]) -> torch.Tensor:
        """User vectors from profile reviews: their text, and their items if ``history-embeddings``."""
        texts = [profile_text(p, self.catalogue.items, style=self.cfg.profile_style) for p in profiles]
        history = None
        if self.cfg.history_embeddings:
            rows = [self.catalogue.rows(r.item_id for r in p) for p in profiles]
            history = torch.full((len(rows), max(map(len, rows), default=0) or 1), -1, dtype=torch.long)
            for i, r in enumerate(rows):
                history[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            history = history.to(self.device)
        return self._encode_texts(texts, history)

    def _encode_texts(self, texts: list[str], history: torch.Tensor | None = None) -> torch.Tensor:
        """User vectors from profile texts (within the token budget) and optional history rows."""
        batch = self.tokenizer(
            texts, truncation=True, max_length=self.cfg.max_profile_tokens, padding=True, return_tensors="pt"
        )
        return self.model.encode_users(
            batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device), history
        )


def _augmenter(cfg: RunConfig, model: TwoTowerRecommender, tokenizer: PreTrainedTokenizerBase) -> Augmenter | None:
    """The training augmentation ``cfg`` asks for (None = none)."""
    if not cfg.augmentations:
        return None
    neighbours = None
    if "substitute" in cfg.augmentations:
        embeddings = cast(Any, model.encoder).get_base_model().get_input_embeddings().weight
        neighbours = EmbeddingNeighbours(tokenizer.get_vocab(), embeddings)
    return Augmenter(cfg.augmentations, cfg.augment_rate, neighbours)


def all_examples(reviews: list[Review], mode: str) -> list[tuple[list[Review], str]]:
    """Every (profile reviews, target item) one user offers; ``reviews`` are in time order."""
    if mode == "next-item" and len(reviews) > 1:
        return [(reviews[:p], reviews[p].item_id) for p in range(1, len(reviews))]
    return [(reviews[:p] + reviews[p + 1 :], reviews[p].item_id) for p in range(len(reviews))]


def _example(reviews: list[Review], mode: str, rng: random.Random) -> tuple[list[Review], str]:
    """One of :func:`all_examples`, drawn uniformly."""
    return rng.choice(all_examples(reviews, mode))


def _held_out(split: Split, target: str) -> dict[str, Review]:
    if target not in ("valid", "test"):
        raise ValueError(f"target should be 'valid' or 'test', got {target!r}.")
    return split.valid if target == "valid" else split.test


def ranks_from_scores(
    scores: np.ndarray, users: Sequence[str], split: Split, catalogue: Catalogue, *, target: str
) -> np.ndarray:
    """Full-ranking 1-based rank of each user's held-out item (their train items excluded)."""
    held_out = _held_out(split, target)
    ranks = []
    for row, user in enumerate(users):
        exclude = catalogue.rows(r.item_id for r in split.train.get(user, []))
        ranks.append(target_rank(scores[row], catalogue.index[held_out[user].item_id], exclude))
    return np.asarray(ranks)


def _catalogue_vectors(
    model: TwoTowerRecommender, tokenizer: PreTrainedTokenizerBase, catalogue: Catalogue, cfg: RunConfig
) -> ItemVectors:
    """Frozen-base item vectors: kept per process, and on disk for the next process
    (:mod:`common.item_cache`; their inputs are all public)."""
    device = next(model.parameters()).device
    key = (str(cfg.model_dir), cfg.max_item_tokens, catalogue.ids, str(device))
    if key not in _ITEM_CACHE:
        texts = catalogue.texts()
        disk_key = cache_key(cfg.model_dir, cfg.max_item_tokens, catalogue.ids, texts, str(device))
        pooled = cached_pooled(
            disk_key,
            lambda: pool_catalogue(model, tokenizer, catalogue.ids, texts, max_tokens=cfg.max_item_tokens).pooled,
        )
        _ITEM_CACHE[key] = ItemVectors(ids=catalogue.ids, pooled=pooled.to(device))
    return _ITEM_CACHE[key]
