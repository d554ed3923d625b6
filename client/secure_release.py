"""Distributed DP on the device: this client's share of a release summed over the federation.

With ``dp`` = 'distributed' the run's training is a release of item statistics through
Flower's SecAgg+ (``secaggplus_mod``): the users' recent item counts (with ``release-ratings`` also
their rating sums, see ``common/ratings.py``: sensitivity sqrt(2k)), and optionally the head items'
Gram matrix (``release-head-items``; sensitivity sqrt(k (k + 1) / 2)). For the counts, every device

1. clips each of its users to their ``release-recent-items`` most recent training items (a 0/1
   vector over the catalogue, L2 norm at most sqrt(k): the user-level sensitivity),
2. sums its users' vectors and adds its *share* of the Gaussian noise, drawn from OS entropy:
   standard deviation sigma x sqrt(k) / sqrt(t - c), where t is the SecAgg+ reconstruction
   threshold this device itself agreed to in the protocol's setup (the fewest clients whose
   shares any unmasked sum holds) and c the colluding clients assumed (the larger of the run's
   ``dp-colluders`` and the device policy's ``assumed-colluders``). Any sum the server can
   unmask therefore holds at least t - c honest shares, whose variances add up to at least
   (sigma x sqrt(k))^2: one Gaussian mechanism over all the federation's users;
3. checks the release against its own ledger before the protocol starts (a device past its
   budget declines at the setup stage, before any key exists) and records it before its
   masked vector leaves. It answers each statistic once per run: a second request (a free
   second look at the same data) is refused; a new run is charged again.

sigma is a function of public run settings only (``target-epsilon``, ``target-delta``, one
release, every user), so the server's accountant and every device's ledger compute the same.
SecAgg+ quantises each value to 2^22 levels over [-clipping range, +clipping range] with
stochastic rounding; continuous Gaussian noise rounded that way is DP only approximately
(a discrete mechanism such as Skellam would be exact; see README "Distributed DP").
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable
from typing import cast

import numpy as np
from flwr.app import Context, Message
from flwr.client.mod import secaggplus_mod
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, RECORD_KEY_STATE, Key, Stage
from flwr.compat.common.recorddict_compat import fitres_to_recorddict

from client.device import Device, run_settings
from client.instructions import BadRequest
from client.local_data import ClientData
from client.policy import PolicyRefusal, PrivacyPolicy
from common import records
from common.config import RunConfig
from common.federation_dp import release_plan
from common.ratings import rating_value
from common.sketch import ReleaseLayout, sensitivity_factor

log = logging.getLogger(__name__)

FITINS_CONFIG = "fitins.config"  # where Flower's legacy fit instruction keeps its config


def item_counts(data: ClientData, recent: int, ratings: bool = False, width: int = 0) -> np.ndarray:
    """Sum over this client's users of the 0/1 vector of their ``recent`` latest training items and,
    with ``ratings``, after it the sum of those items' rating values ((stars - 3) / 2, in [-1, 1]);
    each half laid out by :class:`ReleaseLayout` (exact, or a count sketch of ``width`` beyond it)."""
    layout = ReleaseLayout(data.catalogue.ids, width or len(data.catalogue))
    bound = math.sqrt(recent)
    values = np.zeros(2 * layout.length if ratings else layout.length, dtype=np.float64)
    for user in data.users:
        latest = {}  # row -> rating value of the user's latest review of it
        for review in data.split.train.get(user, [])[-recent:]:  # train reviews are in time order
            if review.item_id in data.catalogue.index:
                latest[data.catalogue.index[review.item_id]] = rating_value(review.rating)
        rows = list(latest)
        values[: layout.length] += layout.encode(rows, [1.0] * len(rows), bound)
        if ratings:
            values[layout.length :] += layout.encode(rows, list(latest.values()), bound)
    return values


def head_gram(data: ClientData, head: list[int], recent: int) -> np.ndarray:
    """Sum over this client's users of the upper triangle (with the diagonal) of x x^T, x the 0/1
    vector of their ``recent`` latest training items among the ``head`` rows (the user's L2
    contribution is at most sqrt(k (k + 1) / 2))."""
    position = {row: i for i, row in enumerate(head)}
    gram = np.zeros((len(head), len(head)), dtype=np.float64)
    for user in data.users:
        rows = data.catalogue.rows(r.item_id for r in data.split.train.get(user, []))
        mine = [position[r] for r in dict.fromkeys(reversed(rows)) if r in position][:recent]
        gram[np.ix_(mine, mine)] += 1.0
    return gram[np.triu_indices(len(head))]


def sensitivity(statistic: str, cfg: RunConfig, catalogue_ids: tuple[str, ...]) -> float:
    """L2 bound of one user's contribution to ``statistic`` over a catalogue of ``catalogue_ids`` (it
    decides whether the counts are sketched, which multiplies the bound)."""
    if statistic == records.RELEASE_ITEM_COUNTS:  # a 1 and a value in [-1, 1] per item with ratings
        layout = ReleaseLayout(catalogue_ids, cfg.release_width)
        return math.sqrt((2 if cfg.releases_ratings else 1) * cfg.release_recent_items) * sensitivity_factor(layout)
    k = cfg.release_head_recent
    return math.sqrt(k * (k + 1) / 2)


def noise_share(shape: tuple[int, ...], std: float) -> np.ndarray:
    """Gaussian noise from OS entropy (``default_rng()`` without a seed): nothing can replay it."""
    return np.random.default_rng().normal(0.0, std, size=shape)


def honest_shares(context: Context, cfg: RunConfig, policy: PrivacyPolicy) -> int:
    """t - c: the SecAgg+ threshold this device agreed to, less the colluders assumed."""
    state = context.state.config_records.get(RECORD_KEY_STATE)
    if state is None or Key.THRESHOLD not in state:
        raise BadRequest("a release arrived before the secure-aggregation setup")
    honest = int(cast(int, state[Key.THRESHOLD])) - max(cfg.dp_colluders, policy.assumed_colluders)
    if honest < 1:
        raise PolicyRefusal(
            "the secure aggregation's threshold leaves no honest client beyond the assumed colluders",
            code=records.POLICY_REFUSED,
        )
    return honest


def contribute(msg: Message, context: Context, cfg: RunConfig) -> Message:
    """This device's clipped, noised statistic (item counts or head Gram) as a legacy fit reply,
    which secaggplus_mod masks before it leaves."""
    config = msg.content.config_records.get(FITINS_CONFIG)
    statistic = config.get(records.RELEASE) if config is not None else None
    plan = release_plan(cfg)
    if statistic not in plan:
        raise BadRequest("the release names no statistic this run plans")
    device = Device.locate(cfg, context)
    data = device.data(cfg)
    honest = honest_shares(context, cfg, device.policy)
    sigma = plan[statistic]
    with device.ledger(data) as ledger:
        if statistic in _released(ledger, msg):
            raise BadRequest("the run already released this statistic")  # no second look at it
        ledger.check(device.policy, [(sigma, 1.0, 1)])
        if statistic == records.RELEASE_ITEM_COUNTS:
            values = item_counts(data, cfg.release_recent_items, cfg.releases_ratings, cfg.release_width)
        else:
            values = head_gram(
                data, _head(config, len(data.catalogue), cfg.release_head_items), cfg.release_head_recent
            )
        std = sigma * sensitivity(statistic, cfg, data.catalogue.ids) / math.sqrt(honest)
        values = values + noise_share(values.shape, std)
        spent = ledger.record(
            "release",
            [(sigma, 1.0, 1)],
            device.policy,
            run_id=int(msg.metadata.run_id),
            server_round=group_round(msg),
            statistic=statistic,
        )
    log.info(
        "release of %s: noise multiplier %.3f split over %d honest shares; epsilon spent %.3f of %g (delta %g)",
        statistic,
        sigma,
        honest,
        spent,
        device.policy.epsilon_budget,
        device.policy.delta,
    )
    fitres = FitRes(
        status=Status(code=Code.OK, message=""),
        num_examples=1,
        metrics={},
        parameters=ndarrays_to_parameters([values.astype(np.float64)]),
    )
    return Message(content=fitres_to_recorddict(fitres, keep_input=False), reply_to=msg)


def is_secure_aggregation(msg: Message) -> bool:
    """Whether ``msg`` is a stage of the SecAgg+ protocol."""
    return RECORD_KEY_CONFIGS in msg.content.config_records


def secure_release_mod(config: RunConfig | None) -> Callable[[Message, Context, Callable], Message]:
    """Flower mod: SecAgg+ stages go through ``secaggplus_mod`` to :func:`contribute`."""

    def mod(msg: Message, context: Context, call_next: Callable[[Message, Context], Message]) -> Message:
        if not is_secure_aggregation(msg):
            return call_next(msg, context)
        cfg = run_settings(config, context)
        if cfg.dp != "distributed":
            raise BadRequest("a secure-aggregation stage in a run without dp = 'distributed'")
        if msg.content.config_records[RECORD_KEY_CONFIGS].get(Key.STAGE) == Stage.SETUP:
            _check_budget(cfg, context, msg)  # decline before any key is made: nothing spent
        return secaggplus_mod(msg, context, functools.partial(contribute, cfg=cfg))

    return mod


def _check_budget(cfg: RunConfig, context: Context, msg: Message) -> None:
    """At the setup stage: the run's releases still to come must fit the budget."""
    device = Device.locate(cfg, context)
    data = device.data(cfg)
    with device.ledger(data) as ledger:
        done = _released(ledger, msg)
        ledger.check(device.policy, [(sigma, 1.0, 1) for s, sigma in release_plan(cfg).items() if s not in done])


def _released(ledger, msg: Message) -> set[str]:
    """The statistics this run has already released from this device."""
    return {
        e.get("statistic", records.RELEASE_ITEM_COUNTS)
        for e in ledger.events
        if e["kind"] == "release" and e.get("run") == int(msg.metadata.run_id)
    }


def _head(config, num_items: int, expected: int) -> list[int]:
    """The head items' rows from the server's config: distinct, in the catalogue, as many as planned."""
    try:
        head = [int(v) for v in str(config.get(records.RELEASE_HEAD, "")).split(",")]
    except ValueError:
        raise BadRequest("the head items are not a list of catalogue rows") from None
    if (
        len(head) != min(expected, num_items)
        or len(set(head)) != len(head)
        or not all(0 <= r < num_items for r in head)
    ):
        raise BadRequest("the head items do not fit the catalogue and the run's settings")
    return head


def group_round(msg: Message) -> int:
    """The round of a SecAgg+ stage (Flower's legacy workflow sends it as the message group)."""
    try:
        return int(msg.metadata.group_id or 0)
    except ValueError:
        return 0
