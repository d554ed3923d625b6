"""Evaluation on the device, under the device's privacy policy.

The server may send any tensors to evaluate, so an evaluation reply is treated as a release of
the held-out reviews and answered only within the policy:

* at most ``max-evaluations-per-round`` queries per run and round (counted in the ledger, so
  restarts do not reset it), and none once the budget is spent;
* with ``eval-noise-multiplier`` s > 0 (the default on real devices) the reply is the Gaussian
  mechanism on the user-level sums: each user adds the vector (1, hr@K, ndcg@K, mrr), whose L2
  norm is at most 2 whatever the tensors, and every coordinate gets noise of standard deviation
  2 s from OS entropy. Each query is one entry (s, 1, 1) in the ledger, composed with DP-SGD,
  so held-out reviews are covered by the same epsilon. The minimum user count is checked on the
  noised count (post-processing);
* with s = 0 (allowed only when the policy does not require DP) the sums and count are exact,
  and a client with fewer than ``min-users-per-reply`` users refuses.

The reply holds sums and a count, never means: the server divides the totals.
"""

from __future__ import annotations

import logging
import math
from typing import cast

import numpy as np
from flwr.app import Message, MetricRecord, RecordDict

from client.instructions import BadRequest, server_round
from client.local_data import ClientData
from client.local_training import global_model
from client.policy import PolicyRefusal, PrivacyPolicy
from client.privacy_ledger import PrivacyLedger
from common import records
from common.config import RunConfig
from common.metrics import metric_sums

log = logging.getLogger(__name__)

USER_SENSITIVITY = 2.0  # L2 norm bound of one user's (1, hr, ndcg, mrr)


def evaluate_locally(
    msg: Message, data: ClientData, cfg: RunConfig, *, policy: PrivacyPolicy, ledger: PrivacyLedger
) -> RecordDict:
    """Rank each local user's held-out item with the server's tensors; reply with (noised) sums."""
    config = msg.content.get(records.CONFIG)
    target = config.get(records.EVAL_TARGET, "valid") if config is not None else "valid"
    if target not in ("valid", "test"):
        raise BadRequest(f"`{records.EVAL_TARGET}` should be 'valid' or 'test'")
    run_id, round_number = int(msg.metadata.run_id), server_round(msg)
    if ledger.evaluations(run_id, round_number) >= policy.max_evaluations_per_round:
        raise PolicyRefusal(
            f"evaluation refused: {policy.max_evaluations_per_round} evaluation(s) already "
            f"answered in run {run_id}, round {round_number}",
            code=records.EVALUATION_LIMIT,
        )
    noise = policy.eval_noise_multiplier
    entries = [(noise, 1.0, 1)] if policy.noised_evaluation else []
    if entries:
        ledger.check(policy, entries)  # raises BudgetExhausted: nothing is computed past the budget
    limit = 0  # noised: every user, so that one user's presence changes one user's contribution only
    if not entries and target == "valid":
        limit = math.ceil(cfg.max_eval_users / cfg.num_clients)
    users = data.eval_users(target, limit=limit, seed=cfg.seed)
    ranks = global_model(msg, data, cfg).ranks(users, data.split, target=target) if users else np.zeros(0, int)
    values: dict[str, float] = {records.EVAL_USERS: float(len(ranks)), **metric_sums(ranks, k=cfg.eval_k)}
    if entries:
        rng = np.random.default_rng()  # seeded from OS entropy
        values = {name: value + float(rng.normal(0.0, USER_SENSITIVITY * noise)) for name, value in values.items()}
    ledger.record("evaluate", entries, policy, run_id=run_id, server_round=round_number)
    if values[records.EVAL_USERS] < policy.min_users_per_reply:
        raise PolicyRefusal(
            f"evaluation refused: {'the noised' if entries else 'the'} user count is below the "
            f"policy's minimum of {policy.min_users_per_reply}",
            code=records.TOO_FEW_USERS,
        )
    log.info(
        "evaluated %s for round %d (%s)",
        target,
        round_number,
        f"noised, x{noise:g}" if entries else f"{len(users)} users, exact",
    )
    return RecordDict({records.METRICS: MetricRecord(cast(dict, values))})
