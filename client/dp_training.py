"""DP-SGD on the client (Opacus): per-user clipping and Gaussian noise on the adapter's gradients.

The unit protected is one user: one training example is one user (their target item and
profile are drawn from their own reviews only), and users are Poisson-sampled with rate
q = 1 / ceil(users / dp-batch-size) per step, so the guarantee covers everything a user wrote on
this client. Per-example gradients come from Opacus's hooks; the item tower runs once per example
so that its layers have them too. A fresh PrivacyEngine is built each round; its accountant's
history goes into the client's persistent :class:`~client.privacy_ledger.PrivacyLedger`.
"""

from __future__ import annotations

import logging
import math
import random
from typing import Sequence

import numpy as np
import torch
from opacus import PrivacyEngine
from opacus.grad_sample import register_grad_sampler
from torch.utils.data import DataLoader, TensorDataset

from common.model import ItemTable
from common.recommender import Recommender, TrainResult
from common.split import Split

log = logging.getLogger(__name__)


@register_grad_sampler(ItemTable)
def _item_table_grad_sample(layer: ItemTable, activations, backprops: torch.Tensor) -> dict:
    """Per-example gradient of ``vectors + weight``: the output gradient itself ([B, items, dim])."""
    return {layer.weight: backprops} if layer.weight.requires_grad else {}


def sample_rate(num_users: int, batch_size: int) -> float:
    """Poisson sampling rate of one user per step (what Opacus's DP data loader uses)."""
    return 1.0 / math.ceil(num_users / batch_size)


def train_private(recommender: Recommender, users: Sequence[str], split: Split, *, rng: random.Random,
                  steps: int, noise_multiplier: float, max_grad_norm: float,
                  accountant: str) -> tuple[TrainResult, list[tuple[float, float, int]]]:
    """``steps`` DP-SGD steps over ``users``; returns loss statistics and the accountant history."""
    cfg = recommender.cfg
    users = [u for u in users if split.train.get(u)]
    if not users:
        raise ValueError("no users with training reviews on this client; nothing to train.")
    model = recommender.model
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=cfg.dp_learning_rate, weight_decay=cfg.weight_decay)
    generator = torch.Generator().manual_seed(rng.randrange(2**31))
    loader = DataLoader(TensorDataset(torch.arange(len(users))), batch_size=cfg.dp_batch_size,
                        generator=generator)
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
                batch = [split.train[users[i]] for i in index.tolist()]
                loss = recommender._loss(batch, rng, per_example=True)
                loss.backward()
                optimiser.step()
                seen += len(batch)
                losses.append(float(loss.detach()))
    finally:
        module._close()  # remove Opacus's hooks: the model is used for plain ranking afterwards
    real = [x for x in losses if not math.isnan(x)] or [float("nan")]
    history = [tuple(h) for h in engine.accountant.history]
    log.info("DP-SGD: %d steps, noise multiplier %.3f, clip %.2f, sample rate %.4f, loss %.4f -> %.4f",
             len(losses), noise_multiplier, max_grad_norm, sample_rate(len(users), cfg.dp_batch_size),
             real[0], real[-1])
    return TrainResult(num_examples=len(users), steps=len(losses), examples_seen=seen,
                       mean_loss=float(np.mean(real)), first_loss=real[0], last_loss=real[-1]), history
