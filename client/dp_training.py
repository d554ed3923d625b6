"""DP-SGD on the client (Opacus): per-user clipping and Gaussian noise on the adapter's gradients.

The unit protected is one user: one training example is one user (their target item and
profile are drawn from their own reviews only), and users are Poisson-sampled with the public
rate q = ``dp-sample-rate`` per step (1.0: every user, every step), so the guarantee covers
everything a user wrote on this client.

Guarantee against a curious server: every random choice of the mechanism (the Gaussian noise,
the Poisson sample, the example drawn per user) comes from the operating system's entropy, so
knowing the run config, the seed, the node id and the round does not let anyone replay the
noise. The released quantity is the noisy *sum* of clipped per-user gradients (Opacus's
normalisation by the expected batch, which would scale with the private user count, is set to
1; Adam is invariant to that scale). Nothing in a DP reply depends on the data except through
this mechanism: see :func:`client.local_training.train_locally`. Not covered: floating-point
attacks on the Gaussian sampler (Opacus's ``secure_mode`` needs torchcsprng, which has no build
for this torch); the seed of each round's generator is 64 bits of OS entropy.

What DP-SGD trains is ``dp-train``: with 'item-bias' only the per-item score offsets take
gradients (everything else is frozen for the round and sent back unchanged), so the same noise
spreads over 900 coordinates instead of about 240,000. On clients of ~100 users that is the
difference between learning the item prior and a random walk (``benchmarks/results.md``, "DP
utility"). Per-example gradients come from Opacus's hooks; when the item tower trains it runs
once per example so that its layers have them too. A fresh PrivacyEngine is built each round;
the ledger (:class:`~client.privacy_ledger.PrivacyLedger`) records (noise, rate, steps).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from opacus import PrivacyEngine
from opacus.accountants.utils import get_noise_multiplier
from opacus.data_loader import DPDataLoader
from opacus.grad_sample import register_grad_sampler
from torch.utils.data import TensorDataset

from client.privacy_ledger import new_accountant
from common.model import ItemBias, ItemTable
from common.recommender import Recommender, TrainResult, all_examples
from common.split import Split

log = logging.getLogger(__name__)


@register_grad_sampler(ItemTable)
def _item_table_grad_sample(layer: ItemTable, activations, backprops: torch.Tensor) -> dict:
    """Per-example gradient of ``vectors + per-item vectors``: the output gradient ([B, items, dim]),
    summed into shared rows where the table is hashed."""
    return {layer.weight: layer.per_example_grad(backprops)} if layer.weight.requires_grad else {}


@register_grad_sampler(ItemBias)
def _item_bias_grad_sample(layer: ItemBias, activations, backprops: torch.Tensor) -> dict:
    """Per-example gradient of ``logits + weight``: the logits' gradient ([B, items]), summed over
    a user's examples when the logits are [B, examples, items] (see :class:`FrozenTowers`)."""
    if not layer.weight.requires_grad:
        return {}
    per_user = backprops.reshape(backprops.shape[0], -1, backprops.shape[-1]).sum(1)
    return {layer.weight: layer.per_example_grad(per_user)}


def secure_generator() -> torch.Generator:
    """A torch generator seeded from 64 bits of OS entropy: nothing in any config can replay it."""
    return torch.Generator().manual_seed(int.from_bytes(os.urandom(8), "little") >> 1)


def secure_random() -> random.Random:
    """Python's generator over the OS's entropy source (for DP's own random choices)."""
    return random.SystemRandom()


def calibrate_noise(
    *,
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: str,
    reserved: Sequence[tuple[float, float, int]] = (),
) -> float:
    """The noise multiplier that spends ``target_epsilon`` at ``delta`` over ``steps`` DP-SGD steps
    at ``sample_rate``, leaving room for the ``reserved`` releases (e.g. the run's noised
    evaluations). Every argument is public, so the result is too.

    Without reservations this is Opacus's own search; with them, the same bisection over the
    composed history. Raises ValueError when the reservations alone spend the target.
    """
    if not reserved:
        return float(
            get_noise_multiplier(
                target_epsilon=target_epsilon,
                target_delta=delta,
                sample_rate=sample_rate,
                steps=steps,
                accountant=accountant,
            )
        )

    def epsilon(sigma: float) -> float:
        acc = new_accountant(accountant)
        acc.history = [(sigma, sample_rate, steps), *reserved]
        return float(acc.get_epsilon(delta=delta))

    low, high = 0.0, 1.0
    while epsilon(high) > target_epsilon:
        low, high = high, 2 * high
        if high > 1e4:
            raise ValueError(
                f"the reserved releases alone spend more than epsilon {target_epsilon:g}; "
                "lower the evaluation noise's cost or raise the target"
            )
    while high - low > 0.005:  # sigma to within 0.005, erring on the side of more noise
        middle = (low + high) / 2
        low, high = (middle, high) if epsilon(middle) > target_epsilon else (low, middle)
    return high


@contextlib.contextmanager
def only_training(model: torch.nn.Module, what: str):
    """Freeze every trainable tensor except those ``dp-train`` names; restore on exit.

    Restoring matters: the exchanged state is "every trainable tensor", so the frozen ones
    still travel (unchanged) and the server's average stays well defined.
    """
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    keep = {n for n, _ in trainable if what == "all" or n.startswith("item_bias.")}
    if not keep:
        raise ValueError(
            f"`dp-train` is {what!r} but the model has no such tensors; turn "
            "`item-embeddings` on or set `dp-train` to 'all'."
        )
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
            vectors = torch.cat(
                [recommender._encode(profiles[start : start + 64]) for start in range(0, len(profiles), 64)]
            )
        self.model.train(was_training)
        # Padded once for the round: [users, examples, ...]; target -100 marks padding.
        counts = [len(e) for e in examples]
        self.counts = torch.tensor(counts)
        self.vectors = torch.zeros(len(users), max(counts), vectors.shape[1], device=vectors.device)
        self.targets = torch.full((len(users), max(counts)), -100, dtype=torch.long, device=vectors.device)
        self.mask = torch.zeros(len(users), max(counts), self.items.shape[0], dtype=torch.bool, device=vectors.device)
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
        assert self.model.item_bias is not None  # these rounds train the offsets (dp-train = 'item-bias')
        logits = self.model.item_bias(torch.einsum("bpd,nd->bpn", users, self.items) / self.model.temperature)
        logits = logits.masked_fill(self.mask[index, :count], float("-inf"))
        per_example = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100, reduction="none"
        ).reshape(len(index), count)
        return (per_example.sum(1) / (targets >= 0).sum(1)).mean()


def train_private(
    recommender: Recommender,
    users: Sequence[str],
    split: Split,
    *,
    steps: int,
    noise_multiplier: float,
    max_grad_norm: float,
    sample_rate: float,
) -> tuple[TrainResult, list[tuple[float, float, int]]]:
    """``steps`` DP-SGD steps over ``users``; returns loss statistics (for the device's own log,
    never sent under DP) and the accountant entries [(noise multiplier, sample rate, steps)]."""
    cfg = recommender.cfg
    users = [u for u in users if split.train.get(u)]
    if not users:
        raise ValueError("no users with training reviews on this client; nothing to train.")
    if not 0 < sample_rate <= 1:
        raise ValueError(f"`dp-sample-rate` should be in (0, 1], got {sample_rate!r}.")
    with only_training(recommender.model, cfg.dp_train) as params:
        losses, seen = _dp_sgd(
            recommender,
            params,
            users,
            split,
            steps=steps,
            sample_rate=sample_rate,
            noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm,
        )
    real = [x for x in losses if not math.isnan(x)] or [float("nan")]
    log.info(
        "DP-SGD (%s): %d steps, noise multiplier %.3f, clip %.2f, sample rate %.4f, loss %.4f -> %.4f",
        cfg.dp_train,
        len(losses),
        noise_multiplier,
        max_grad_norm,
        sample_rate,
        real[0],
        real[-1],
    )
    result = TrainResult(
        num_examples=len(users),
        steps=len(losses),
        examples_seen=seen,
        mean_loss=float(np.mean(real)),
        first_loss=real[0],
        last_loss=real[-1],
    )
    return result, [(float(noise_multiplier), float(sample_rate), len(losses))]


def _dp_sgd(
    recommender: Recommender,
    params: list[torch.nn.Parameter],
    users: list[str],
    split: Split,
    *,
    steps: int,
    sample_rate: float,
    noise_multiplier: float,
    max_grad_norm: float,
) -> tuple[list[float], int]:
    """The Opacus loop: a fresh engine, ``steps`` Poisson-sampled steps; losses and users seen."""
    cfg, model = recommender.cfg, recommender.model
    rng = secure_random()
    optimiser = torch.optim.AdamW(params, lr=cfg.dp_learning_rate, weight_decay=cfg.weight_decay)
    # Poisson sampling at the public rate, from OS entropy (no Opacus re-wrapping: poisson_sampling=False).
    loader = DPDataLoader(
        TensorDataset(torch.arange(len(users))), sample_rate=sample_rate, generator=secure_generator()
    )
    towers = FrozenTowers(recommender, users, split) if cfg.dp_train == "item-bias" else None
    with warnings.catch_warnings():  # "Secure RNG turned off": we pass OS-entropy generators instead
        warnings.filterwarnings("ignore", message="Secure RNG turned off", category=UserWarning)
        engine = PrivacyEngine(accountant="rdp")  # its own accountant is unused: the ledger accounts
    model.train()
    module, optimiser, loader = engine.make_private(
        module=model,
        optimizer=optimiser,
        data_loader=loader,
        noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm,
        poisson_sampling=False,
        grad_sample_mode="hooks",
        noise_generator=secure_generator(),
    )
    optimiser.expected_batch_size = 1  # release the noisy sum: no division by the private user count
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
                        p.grad_sample = torch.zeros((0, *p.shape), device=p.device)  # type: ignore[attr-defined]
                    optimiser.step()
                    losses.append(float("nan"))
                    continue
                if towers is not None:
                    loss = towers.loss(index.tolist())
                else:  # one random example per user; the item tower per example for its gradients
                    loss = recommender._loss([split.train[users[i]] for i in index.tolist()], rng, per_example=True)
                loss.backward()
                optimiser.step()
                seen += len(index)
                losses.append(float(loss.detach()))
    finally:
        module._close()  # remove Opacus's hooks: the model is used for plain ranking afterwards
    return losses, seen
