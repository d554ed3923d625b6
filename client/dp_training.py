"""DP-SGD on the client (Opacus): per-user clipping and Gaussian noise on the adapter's gradients.

The unit protected is one user: one training example is one user (their target item and
profile are drawn from their own reviews only), and users are Poisson-sampled with rate
q = 1 / ceil(users / dp-batch-size) per step (q = 1 when dp-batch-size is 0: every user, every
step), so the guarantee covers everything a user wrote on this client.

What DP-SGD trains is ``dp-train``: with 'item-bias' only the per-item score offsets take
gradients (everything else is frozen for the round and sent back unchanged), so the same noise
spreads over 900 coordinates instead of about 240,000. On clients of ~100 users that is the
difference between learning the item prior and a random walk (``benchmarks/results.md``, "DP
utility"). Per-example gradients come from Opacus's hooks; when the item tower trains it runs
once per example so that its layers have them too. A fresh PrivacyEngine is built each round;
its accountant's history goes into the client's persistent
:class:`~client.privacy_ledger.PrivacyLedger`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
from typing import Sequence

import numpy as np
import torch
from opacus import PrivacyEngine
from opacus.grad_sample import register_grad_sampler
from torch.utils.data import DataLoader, TensorDataset

from common.model import ItemBias, ItemTable
from common.recommender import Recommender, TrainResult, all_examples
from common.split import Split

log = logging.getLogger(__name__)


@register_grad_sampler(ItemTable)
def _item_table_grad_sample(layer: ItemTable, activations, backprops: torch.Tensor) -> dict:
    """Per-example gradient of ``vectors + weight``: the output gradient itself ([B, items, dim])."""
    return {layer.weight: backprops} if layer.weight.requires_grad else {}


@register_grad_sampler(ItemBias)
def _item_bias_grad_sample(layer: ItemBias, activations, backprops: torch.Tensor) -> dict:
    """Per-example gradient of ``logits + weight``: the logits' gradient ([B, items]), summed over
    a user's examples when the logits are [B, examples, items] (see :class:`FrozenTowers`)."""
    if not layer.weight.requires_grad:
        return {}
    return {layer.weight: backprops.reshape(backprops.shape[0], -1, backprops.shape[-1]).sum(1)}


def sample_rate(num_users: int, batch_size: int) -> float:
    """Poisson sampling rate of one user per step (what Opacus's DP data loader uses); 0 = all."""
    return 1.0 if batch_size == 0 else 1.0 / math.ceil(num_users / batch_size)


@contextlib.contextmanager
def only_training(model: torch.nn.Module, what: str):
    """Freeze every trainable tensor except those ``dp-train`` names; restore on exit.

    Restoring matters: the exchanged state is "every trainable tensor", so the frozen ones
    still travel (unchanged) and the server's average stays well defined.
    """
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    keep = {n for n, _ in trainable if what == "all" or n.startswith("item_bias.")}
    if not keep:
        raise ValueError(f"`dp-train` is {what!r} but the model has no such tensors; turn "
                         "`item-embeddings` on or set `dp-train` to 'all'.")
    try:
        for name, param in trainable:
            param.requires_grad_(name in keep)
        yield [p for n, p in trainable if n in keep]
    finally:
        for _, param in trainable:
            param.requires_grad_(True)


class FrozenTowers:
    """``dp-train`` = 'item-bias': both towers are frozen, so each user's examples are encoded once.

    A user's loss is then the mean over every example they offer (each training target with the
    profile before it), which is still one user's data in one clipped gradient, computed from
    vectors cached for the round instead of re-running BERT at every step.
    """

    def __init__(self, recommender: Recommender, users: Sequence[str], split: Split) -> None:
        self.model, cfg, catalogue = recommender.model, recommender.cfg, recommender.catalogue
        examples = [all_examples(split.train[u], cfg.training_targets) for u in users]
        was_training = self.model.training
        self.model.eval()  # a frozen tower: no dropout in the cached vectors
        with torch.no_grad():
            self.items = self.model.encode_items(recommender.items.pooled)
            profiles = [profile for user in examples for profile, _ in user]
            vectors = torch.cat([recommender._encode(profiles[start:start + 64])
                                 for start in range(0, len(profiles), 64)])
        self.model.train(was_training)
        # Padded once for the round: [users, examples, ...]; target -100 marks padding.
        counts = [len(e) for e in examples]
        self.counts = torch.tensor(counts)
        self.vectors = torch.zeros(len(users), max(counts), vectors.shape[1], device=vectors.device)
        self.targets = torch.full((len(users), max(counts)), -100, dtype=torch.long, device=vectors.device)
        self.mask = torch.zeros(len(users), max(counts), self.items.shape[0], dtype=torch.bool,
                                device=vectors.device)
        for row, (user, own) in enumerate(zip(users, vectors.split(counts), strict=True)):
            n = counts[row]
            self.vectors[row, :n] = own
            self.targets[row, :n] = torch.tensor([catalogue.index[t] for _, t in examples[row]])
            self.mask[row, :n, catalogue.rows(r.item_id for r in split.train[user])] = True  # not negatives
            self.mask[row, torch.arange(n), self.targets[row, :n]] = False

    def loss(self, index: list[int]) -> torch.Tensor:
        """Mean over the users in ``index`` of each user's mean cross-entropy."""
        count = int(self.counts[index].max())
        users, targets = self.vectors[index, :count], self.targets[index, :count]
        logits = self.model.item_bias(torch.einsum("bpd,nd->bpn", users, self.items) / self.model.temperature)
        logits = logits.masked_fill(self.mask[index, :count], float("-inf"))
        per_example = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100, reduction="none"
        ).reshape(len(index), count)
        return (per_example.sum(1) / (targets >= 0).sum(1)).mean()


def train_private(recommender: Recommender, users: Sequence[str], split: Split, *, rng: random.Random,
                  steps: int, noise_multiplier: float, max_grad_norm: float,
                  accountant: str) -> tuple[TrainResult, list[tuple[float, float, int]]]:
    """``steps`` DP-SGD steps over ``users``; returns loss statistics and the accountant history."""
    cfg = recommender.cfg
    users = [u for u in users if split.train.get(u)]
    if not users:
        raise ValueError("no users with training reviews on this client; nothing to train.")
    with only_training(recommender.model, cfg.dp_train) as params:
        losses, seen, history = _dp_sgd(recommender, params, users, split, rng=rng, steps=steps,
                                        noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm,
                                        accountant=accountant)
    real = [x for x in losses if not math.isnan(x)] or [float("nan")]
    log.info("DP-SGD (%s): %d steps, noise multiplier %.3f, clip %.2f, sample rate %.4f, loss %.4f -> %.4f",
             cfg.dp_train, len(losses), noise_multiplier, max_grad_norm,
             sample_rate(len(users), cfg.dp_batch_size), real[0], real[-1])
    return TrainResult(num_examples=len(users), steps=len(losses), examples_seen=seen,
                       mean_loss=float(np.mean(real)), first_loss=real[0], last_loss=real[-1]), history


def _dp_sgd(recommender: Recommender, params: list[torch.nn.Parameter], users: list[str], split: Split, *,
            rng: random.Random, steps: int, noise_multiplier: float, max_grad_norm: float,
            accountant: str) -> tuple[list[float], int, list[tuple[float, float, int]]]:
    """The Opacus loop: a fresh engine, ``steps`` Poisson-sampled steps; losses, users seen, history."""
    cfg, model = recommender.cfg, recommender.model
    optimiser = torch.optim.AdamW(params, lr=cfg.dp_learning_rate, weight_decay=cfg.weight_decay)
    generator = torch.Generator().manual_seed(rng.randrange(2**31))
    loader = DataLoader(TensorDataset(torch.arange(len(users))), batch_size=cfg.dp_batch_size or len(users),
                        generator=generator)
    towers = FrozenTowers(recommender, users, split) if cfg.dp_train == "item-bias" else None
    engine = PrivacyEngine(accountant=accountant)
    model.train()
    module, optimiser, loader = engine.make_private(
        module=model, optimizer=optimiser, data_loader=loader, noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm, poisson_sampling=True, grad_sample_mode="hooks")
    losses: list[float] = []
    seen = 0
    try:
        while len(losses) < steps:
            for (index,) in loader:
                if len(losses) >= steps:
                    break
                optimiser.zero_grad(set_to_none=True)
                if len(index) == 0:  # an empty Poisson batch: a noise-only step, still counted
                    for p in params:
                        p.grad_sample = torch.zeros((0, *p.shape), device=p.device)
                    optimiser.step()
                    losses.append(float("nan"))
                    continue
                if towers is not None:
                    loss = towers.loss(index.tolist())
                else:  # one random example per user; the item tower per example for its gradients
                    loss = recommender._loss([split.train[users[i]] for i in index.tolist()], rng,
                                             per_example=True)
                loss.backward()
                optimiser.step()
                seen += len(index)
                losses.append(float(loss.detach()))
    finally:
        module._close()  # remove Opacus's hooks: the model is used for plain ranking afterwards
    return losses, seen, [tuple(h) for h in engine.accountant.history]
