"""The two-tower recommender: a LoRA-tuned BERT user tower and a frozen-BERT item tower.

User tower: the user's profile text -> BERT with LoRA adapters -> mean pooling -> projection.
Item tower: the item's text -> the same BERT with the adapters switched off -> mean pooling ->
projection. Because the item tower's base is frozen, its pooled vectors are computed once and
cached; only the projection on top of them trains. Scores are cosine similarities divided by a
temperature.

Zero-shot start: both projections begin as the same random orthogonal map (biases zero, item
vectors zero, LoRA B zero), so an untrained model already ranks items by the base encoder's
text similarity to the user's profile, which is a sentence-embedding model's own job. Training
starts from a useful model rather than a random one; that matters most under DP, where every
step is noisy (see ``benchmarks/results.md``, "DP utility"). Only LoRA tensors, the two
projections, the item vectors and the per-item score offsets are trainable, and only they are
exchanged in federated rounds (see :func:`trainable_state`).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from common.config import RunConfig

log = logging.getLogger(__name__)
# PEFT asks transformers a deprecated question on every model it wraps; nothing for our users to do.
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)

HEADS_FILE = "heads.safetensors"
META_FILE = "privrec.json"
HEAD_PREFIXES = ("user_proj.", "item_proj.", "item_embedding", "item_bias", "item_item.", "item_rating.")
RELEASED_PREFIXES = ("item_item.", "item_rating.")  # statistics exchanged with the model but never trained
ITEM_ITEM_WEIGHT, ITEM_ITEM_ROWS = "item_item.weight", "item_item.rows"
ITEM_RATING_OFFSETS, ITEM_RATING_MEAN = "item_rating.offsets", "item_rating.mean"
ITEM_BIAS = "item_bias.weight"  # the per-item score offsets in the exchanged state


class ModelError(ValueError):
    """A checkpoint or an update does not fit the model."""


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cuda' without a GPU is an error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ModelError("`device` is 'cuda' but no CUDA GPU is visible; use 'auto' or 'cpu'.")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average token vectors over the real (unmasked) tokens."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def hashed_rows(num_items: int, width: int) -> torch.Tensor | None:
    """[2, num_items] table rows of each catalogue row when the catalogue is wider than ``width``
    (two public blake2b hashes of the row number: the "hashing trick" with two hashes, so that two
    items rarely share both); None when every item can have its own row (``width`` 0 = always)."""
    if width <= 0 or num_items <= width:
        return None
    rows = torch.empty(2, num_items, dtype=torch.long)
    for item in range(num_items):
        digest = hashlib.blake2b(str(item).encode(), digest_size=16, person=b"privrec-table").digest()
        rows[0, item] = int.from_bytes(digest[:8], "little") % width
        rows[1, item] = int.from_bytes(digest[8:], "little") % width
    return rows


class _PerItem(nn.Module):
    """A learned table with one entry per catalogue item, or ``width`` shared rows past that
    (:func:`hashed_rows`; each item then reads the sum of its two rows). Zero at start.

    A module of its own (not a bare parameter) so that DP-SGD can compute per-example gradients
    for it (see ``client/dp_training.py``). ``rows`` is derived, never exchanged or saved.
    """

    def __init__(self, num_items: int, *shape: int, width: int = 0) -> None:
        super().__init__()
        # A plain attribute, not a buffer: Opacus refuses trainable layers with buffers.
        self.rows = hashed_rows(num_items, width)
        self.weight = nn.Parameter(torch.zeros(num_items if self.rows is None else width, *shape))

    def per_item(self) -> torch.Tensor:
        """[items, ...]: each catalogue item's entry."""
        if self.rows is None:
            return self.weight
        rows = self.rows.to(self.weight.device)
        return self.weight[rows[0]] + self.weight[rows[1]]

    def per_example_grad(self, per_item: torch.Tensor) -> torch.Tensor:
        """Per-example gradients of ``weight`` from those of :meth:`per_item` ([B, items, ...])."""
        if self.rows is None:
            return per_item
        rows = self.rows.to(per_item.device)
        grad = per_item.new_zeros(per_item.shape[0], *self.weight.shape)
        return grad.index_add_(1, rows[0], per_item).index_add_(1, rows[1], per_item)


class ItemTable(_PerItem):
    """A learned vector per catalogue item, added to the item tower's projected text vectors."""

    def __init__(self, num_items: int, dim: int, *, width: int = 0) -> None:
        super().__init__(num_items, dim, width=width)

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        """``vectors`` ([items, dim], or [examples, items, dim]) plus each item's own vector."""
        return vectors + self.per_item()


class ItemBias(_PerItem):
    """A learned score offset per catalogue item, added to the logits (zero at start).

    It carries what text cannot: how often an item is chosen at all. 900 numbers instead of the
    towers' hundreds of thousands, so it is what DP-SGD can learn from few users (``dp-train``).
    """

    def __init__(self, num_items: int, *, width: int = 0) -> None:
        super().__init__(num_items, width=width)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        """``logits`` ([users, items]) plus each item's offset."""
        return logits + self.per_item()


class ItemItem(nn.Module):
    """Released item-item weights over the head items (EASE fitted by the server from the
    federation's DP Gram matrix; ``dp = "distributed"`` with ``release-head-items`` > 0).

    Not trained: both tensors are statistics the server computed from a DP release and sends
    with the model. ``rows`` holds the head items' catalogue rows (as float32, exact below 2^24).
    A user's scores on the head items are their own training history times ``weight``, computed
    on the device (joint DP: the user side is exact and stays local).
    """

    weight: torch.Tensor  # buffers (released, never trained)
    rows: torch.Tensor

    def __init__(self, head_items: int) -> None:
        super().__init__()
        self.register_buffer("weight", torch.zeros(head_items, head_items))
        self.register_buffer("rows", torch.arange(head_items, dtype=torch.float32))

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        """[users, items] 0/1 training histories -> [users, head] item-item scores."""
        return history[:, self.rows.long()] @ self.weight


class ItemRating(nn.Module):
    """Released star-rating statistics (``release-ratings``, see ``common/ratings.py``): each item's
    offset from the federation's mean rating, and that mean. Not trained; a mean of 0 means "not
    released" (no star predictions: ``Recommender.predicted_stars`` returns None)."""

    offsets: torch.Tensor  # buffers (released, never trained)
    mean: torch.Tensor

    def __init__(self, num_items: int) -> None:
        super().__init__()
        self.register_buffer("offsets", torch.zeros(num_items))
        self.register_buffer("mean", torch.zeros(()))


class TwoTowerRecommender(nn.Module):
    """Scores users against items; see the module docstring for the design."""

    def __init__(
        self,
        encoder: PeftModel,
        *,
        embed_dim: int,
        temperature: float,
        num_items: int = 0,
        head_items: int = 0,
        ratings: bool = False,
        table_width: int = 0,
    ) -> None:
        super().__init__()
        hidden = int(cast(Any, encoder.get_base_model()).config.hidden_size)
        self.encoder = encoder
        self.user_proj = nn.Linear(hidden, embed_dim)
        self.item_proj = nn.Linear(hidden, embed_dim)
        # Optional per-item vectors (zero at start, so an untrained row means "text only").
        self.item_embedding = ItemTable(num_items, embed_dim, width=table_width) if num_items else None
        self.item_bias = ItemBias(num_items, width=table_width) if num_items else None
        self.item_item = ItemItem(head_items) if head_items else None
        self.item_rating = ItemRating(num_items) if ratings and num_items else None
        self.temperature = temperature
        self._share_initial_projection()

    @torch.no_grad()
    def _share_initial_projection(self) -> None:
        """Zero-shot start: one orthogonal map for both towers (drawn from the seeded RNG)."""
        nn.init.orthogonal_(self.user_proj.weight)
        self.item_proj.weight.copy_(self.user_proj.weight)
        self.user_proj.bias.zero_()
        self.item_proj.bias.zero_()

    def encode_users(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, history: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Unit-length user vectors from tokenised profiles (LoRA active).

        ``history`` ([users, n] item rows, -1 = padding) adds the mean per-item vector of the
        items in each profile: the user's behaviour next to their words. It stays on the client.
        """
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        vectors = self.user_proj(mean_pool(out.last_hidden_state, attention_mask))
        if history is not None and self.item_embedding is not None:
            present = (history >= 0).unsqueeze(-1).to(vectors.dtype)
            rows = self.item_embedding.per_item()[history.clamp(min=0)] * present
            vectors = vectors + rows.sum(1) / present.sum(1).clamp(min=1.0)
        return nn.functional.normalize(vectors, dim=-1)

    @torch.no_grad()
    def pool_items(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Frozen-base pooled item vectors (adapters off); cacheable."""
        with self.encoder.disable_adapter():
            out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        return mean_pool(out.last_hidden_state, attention_mask)

    def encode_items(self, pooled_items: torch.Tensor, *, per_example: int = 0) -> torch.Tensor:
        """Unit-length item vectors from cached pooled item vectors (+ per-item vectors if on).

        ``per_example`` = B repeats the item tower for each of B examples ([B, items, dim]), so
        that per-example gradients of its layers exist (DP-SGD); the values are the same.
        """
        if per_example:
            pooled_items = pooled_items.unsqueeze(0).expand(per_example, -1, -1)
        vectors = self.item_proj(pooled_items)
        if self.item_embedding is not None:
            vectors = self.item_embedding(vectors)
        return nn.functional.normalize(vectors, dim=-1)

    def similarity(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of unit vectors divided by the temperature, [users, items]: the text part.

        ``items`` is [items, dim], or [users, items, dim] from ``encode_items(per_example=...)``.
        """
        if items.dim() == 3:
            return torch.einsum("bd,bnd->bn", users, items) / self.temperature
        return users @ items.T / self.temperature

    def scores(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Logits: :meth:`similarity` plus the item offsets, [users, items]."""
        logits = self.similarity(users, items)
        return self.item_bias(logits) if self.item_bias is not None else logits


def load_tokenizer(cfg: RunConfig) -> PreTrainedTokenizerBase:
    """The tokenizer that ships with the BERT checkpoint."""
    return AutoTokenizer.from_pretrained(str(_checked_model_dir(cfg)))


def build_model(cfg: RunConfig, *, num_items: int = 0, seed: int | None = None) -> TwoTowerRecommender:
    """A fresh recommender: frozen base + LoRA + projections, initialised from ``seed``.

    ``num_items`` (the catalogue size) is needed when ``item-embeddings`` is on.
    """
    if cfg.item_embeddings and num_items < 1:
        raise ModelError("`item-embeddings` is on, so build_model needs the catalogue size (num_items).")
    torch.manual_seed(cfg.seed if seed is None else seed)
    base = base_model(cfg)
    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=cfg.lora_target_modules,
        bias="none",
        layers_to_transform=_top_layers(base.config.num_hidden_layers, cfg.lora_top_layers),
    )
    try:
        encoder = get_peft_model(base, lora)
    except ValueError as err:
        raise ModelError(
            f"`lora-targets` {cfg.lora_targets!r} does not fit the model in {cfg.model_dir}: {err}"
        ) from err
    if cfg.ffa_lora:  # FFA-LoRA: A stays at its seeded random init on every party; only B trains
        for name, param in encoder.named_parameters():
            if "lora_A" in name:
                param.requires_grad_(False)
    return _two_towers(encoder, cfg, num_items)


def base_model(cfg: RunConfig) -> PreTrainedModel:
    """The frozen BERT base for one model: its weights are read once per process and shared by
    every model built from them (each gets its own modules, which PEFT then wraps). Nothing ever
    trains or merges into them, so a worker running many clients holds one copy."""
    weights = _frozen_base(str(_checked_model_dir(cfg)))
    shared = {id(t): t for t in (*weights.parameters(), *weights.buffers())}
    return copy.deepcopy(weights, shared)


@functools.lru_cache(maxsize=2)
def _frozen_base(path: str) -> PreTrainedModel:
    base = AutoModel.from_pretrained(path)
    base.requires_grad_(False)
    return base


def _two_towers(encoder: PeftModel, cfg: RunConfig, num_items: int) -> TwoTowerRecommender:
    """The recommender around ``encoder`` with the towers and tables ``cfg`` asks for."""
    return TwoTowerRecommender(
        encoder,
        embed_dim=cfg.embed_dim,
        temperature=cfg.temperature,
        num_items=num_items if cfg.item_embeddings else 0,
        head_items=cfg.release_head_items,
        ratings=cfg.releases_ratings,
        table_width=table_width(cfg),
    )


def table_width(cfg: RunConfig) -> int:
    """Rows of the per-item tables past which they are hashed (0 = never): ``item-table-width``
    where the tables travel; under distributed DP they never leave a device (the server fills the
    offsets from the release), so they stay exact."""
    return 0 if cfg.dp == "distributed" else cfg.item_table_width


def _top_layers(num_layers: int, top: int) -> list[int] | None:
    """Indices of the ``top`` highest encoder layers (None = every layer)."""
    if top == 0 or top >= num_layers:
        return None
    return list(range(num_layers - top, num_layers))


def _checked_model_dir(cfg: RunConfig) -> Path:
    path = cfg.model_dir
    if not (path / "config.json").is_file():
        raise ModelError(
            f"`model-path` {str(path)!r} holds no config.json; point it at a local "
            "BERT checkpoint directory (weights are never downloaded)."
        )
    return path


# ----- the exchanged state ---------------------------------------------------------------------
def _exchanged(model: TwoTowerRecommender) -> dict[str, torch.Tensor]:
    """The tensors that travel: trainable parameters and released statistics (buffers)."""
    tensors: dict[str, torch.Tensor] = {n: p for n, p in model.named_parameters() if p.requires_grad}
    tensors.update({n: b for n, b in model.named_buffers() if n.startswith(RELEASED_PREFIXES)})
    return tensors


def trainable_state(model: TwoTowerRecommender) -> dict[str, torch.Tensor]:
    """Name -> detached CPU copy of every exchanged tensor (LoRA, projections, offsets and any
    released item-item weights), nothing else."""
    return {name: tensor.detach().cpu().clone() for name, tensor in _exchanged(model).items()}


def load_trainable_state(model: TwoTowerRecommender, state: Mapping[str, torch.Tensor]) -> None:
    """Copy tensors into the exchanged ones; names, shapes and finiteness must match."""
    params = _exchanged(model)
    missing = sorted(set(params) - set(state))
    unexpected = sorted(set(state) - set(params))
    if missing or unexpected:
        raise ModelError(
            f"update does not fit the model: missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}; both sides must use the same model settings."
        )
    values = {}
    for name, param in params.items():  # check everything before changing anything
        value = torch.as_tensor(state[name])
        if tuple(value.shape) != tuple(param.shape):
            raise ModelError(
                f"tensor {name!r} has shape {tuple(value.shape)}, expected "
                f"{tuple(param.shape)}; both sides must use the same model settings."
            )
        if not torch.isfinite(value).all():
            raise ModelError(f"tensor {name!r} holds NaN or infinite values; refusing the update.")
        values[name] = value
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(values[name].to(param.dtype))


# ----- PEFT-format checkpoints -----------------------------------------------------------------
def save_checkpoint(model: TwoTowerRecommender, directory: Path, *, meta: Mapping[str, object]) -> None:
    """Write the adapter in PEFT's format plus the projections and a small metadata file."""
    directory.mkdir(parents=True, exist_ok=True)
    model.encoder.save_pretrained(str(directory))
    heads = {n: t.contiguous() for n, t in trainable_state(model).items() if n.startswith(HEAD_PREFIXES)}
    save_file(heads, str(directory / HEADS_FILE))
    (directory / META_FILE).write_text(json.dumps(dict(meta), indent=2, sort_keys=True))


def load_checkpoint(directory: Path, cfg: RunConfig, *, num_items: int = 0) -> TwoTowerRecommender:
    """Rebuild a recommender from :func:`save_checkpoint` output via ``PeftModel.from_pretrained``."""
    if not (directory / "adapter_config.json").is_file():
        raise ModelError(f"{directory}: no adapter_config.json; pass a PrivRec checkpoint folder.")
    base = base_model(cfg)
    encoder = PeftModel.from_pretrained(base, str(directory), is_trainable=True)
    model = _two_towers(encoder, cfg, num_items)
    heads = load_file(str(directory / HEADS_FILE))
    with torch.no_grad():
        for name, tensor in _exchanged(model).items():
            if name in heads:
                if tuple(heads[name].shape) != tuple(tensor.shape):
                    raise ModelError(
                        f"{directory}: tensor {name} has shape {tuple(heads[name].shape)}, this model "
                        f"expects {tuple(tensor.shape)}: the checkpoint was trained with another "
                        "catalogue or settings; pass the run's own items file and config"
                    )
                tensor.copy_(heads[name])
    return model


# ----- item tower cache ------------------------------------------------------------------------
@dataclass(frozen=True)
class ItemVectors:
    """Frozen-base pooled vectors of a catalogue, row i = item ``ids[i]``."""

    ids: tuple[str, ...]
    pooled: torch.Tensor


def pool_catalogue(
    model: TwoTowerRecommender,
    tokenizer: PreTrainedTokenizerBase,
    ids: Sequence[str],
    texts: Sequence[str],
    *,
    max_tokens: int,
    batch_size: int = 64,
) -> ItemVectors:
    """Run the frozen item tower once over every item text."""
    device = next(model.parameters()).device
    chunks = []
    model.eval()
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(
            list(texts[start : start + batch_size]),
            truncation=True,
            max_length=max_tokens,
            padding=True,
            return_tensors="pt",
        ).to(device)
        chunks.append(model.pool_items(batch["input_ids"], batch["attention_mask"]))
    return ItemVectors(ids=tuple(ids), pooled=torch.cat(chunks).detach())
