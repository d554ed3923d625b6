"""One training round on the device: load the global tensors, train on the local users, reply.

With ``dp`` = 'local' the round is DP-SGD (:mod:`client.dp_training`), checked against the
device policy's budget in the ledger before it starts and recorded there before anything is
sent. A DP reply holds the tensors and two numbers that depend on no user: a uniform weight
and the epsilon this store has spent (a function of the public settings and of which rounds it
joined). Loss, user counts, steps and seconds stay on the device. Without DP (only where the
policy allows it) the reply also carries the usual training statistics, exact, so a client
with fewer users than the policy's minimum refuses; the round is reproducible from ``seed``.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from typing import Any

import torch
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict

from client.dp_training import calibrate_noise, train_private
from client.instructions import BadRequest, server_round
from client.local_data import ClientData
from client.policy import PolicyRefusal, PrivacyPolicy
from client.privacy_ledger import BudgetExhausted, PrivacyLedger
from common import records
from common.config import RunConfig
from common.recommender import Recommender, planned_steps

log = logging.getLogger(__name__)


def global_model(msg: Message, data: ClientData, cfg: RunConfig) -> Recommender:
    """The recommender with the server's tensors loaded; :class:`BadRequest` if they do not fit."""
    if records.ARRAYS not in msg.content:
        raise BadRequest(f"the message has no '{records.ARRAYS}' record")
    recommender = Recommender(cfg, data.catalogue)
    try:
        recommender.load_state(msg.content.array_records[records.ARRAYS].to_torch_state_dict())
    except (ValueError, KeyError, RuntimeError, TypeError) as err:
        raise BadRequest(f"the server's tensors do not fit this model ({type(err).__name__})") from None
    return recommender


def train_locally(
    msg: Message,
    data: ClientData,
    cfg: RunConfig,
    *,
    policy: PrivacyPolicy,
    ledger: PrivacyLedger,
    client_seed: int = 0,
) -> RecordDict:
    """Train the global model on this client's users; return only tensors and allowed numbers."""
    started = time.perf_counter()
    if cfg.dp == "distributed":  # its only release is the secure sum: never plain tensors or statistics
        raise BadRequest("under dp = 'distributed' a device contributes only through secure aggregation")
    round_number = server_round(msg)
    recommender = global_model(msg, data, cfg)
    run_id = int(msg.metadata.run_id)
    if cfg.dp == "local":
        metrics = _train_private(recommender, data, cfg, policy, ledger, run_id, round_number)
    else:  # without DP (where the policy allows it) the reply's statistics are exact: a minimum applies
        if len(data.users) < policy.min_users_per_reply:
            raise PolicyRefusal(
                f"training refused: fewer users than the policy's minimum of {policy.min_users_per_reply}",
                code=records.TOO_FEW_USERS,
            )
        rng = random.Random(f"{cfg.seed}-{client_seed}-{round_number}")  # reproducible: no DP here
        torch.manual_seed(rng.randrange(2**31))
        result = recommender.train(data.users, data.split, rng=rng)
        ledger.record("train-without-dp", [], policy, run_id=run_id, server_round=round_number)
        log.info(
            "round %d: %d users, %d steps, loss %.4f -> %.4f",
            round_number,
            result.num_examples,
            result.steps,
            result.first_loss,
            result.last_loss,
        )
        metrics = {
            records.NUM_EXAMPLES: result.num_examples,
            records.NUM_STEPS: result.steps,
            records.EXAMPLES_SEEN: result.examples_seen,
            records.TRAIN_LOSS: result.mean_loss,
            records.TRAIN_LOSS_FIRST: result.first_loss,
            records.TRAIN_LOSS_LAST: result.last_loss,
            records.TRAIN_SECONDS: time.perf_counter() - started,
        }
        if cfg.dp == "central":
            metrics[records.UNIFORM_WEIGHT] = 1
    state = recommender.state()
    if cfg.upload_dtype == "float16":  # half the bytes on the wire; the server averages in float32
        state = {name: tensor.to(torch.float16) for name, tensor in state.items()}
    return RecordDict({records.ARRAYS: ArrayRecord(state), records.METRICS: MetricRecord(metrics)})


def _train_private(
    recommender: Recommender,
    data: ClientData,
    cfg: RunConfig,
    policy: PrivacyPolicy,
    ledger: PrivacyLedger,
    run_id: int,
    round_number: int,
) -> dict[str, Any]:
    """DP-SGD for one round: budget checked first, the release recorded before it leaves."""
    q = cfg.dp_sample_rate
    steps = planned_steps(len(data.users), cfg)  # public settings only
    sigma = cfg.noise_multiplier or noise_for(cfg, policy, steps)
    ledger.check(policy, [(sigma, q, steps)])  # raises BudgetExhausted before any training
    result, entries = train_private(
        recommender,
        data.users,
        data.split,
        steps=steps,
        noise_multiplier=sigma,
        max_grad_norm=cfg.max_grad_norm,
        sample_rate=q,
    )
    spent = ledger.record("train", entries, policy, run_id=run_id, server_round=round_number)
    log.info(
        "round %d: DP-SGD, noise multiplier %.3f, epsilon spent %.3f of %g (delta %g)",
        round_number,
        sigma,
        spent,
        policy.epsilon_budget,
        policy.delta,
    )
    return {records.UNIFORM_WEIGHT: 1, records.EPSILON: spent}


def noise_for(cfg: RunConfig, policy: PrivacyPolicy, steps: int) -> float:
    """The noise multiplier that spends the run's target (at most the device's budget) over the
    planned rounds, with room for the run's noised evaluations: one validation per round, the
    untrained start's and the final test. Public inputs only, so every round of a run gets the same."""
    target = min(cfg.target_epsilon, policy.epsilon_budget)
    evaluations = ((policy.eval_noise_multiplier, 1.0, cfg.num_rounds + 2),) if policy.noised_evaluation else ()
    try:
        return _calibrated(
            target, policy.delta, cfg.dp_sample_rate, steps * cfg.num_rounds, policy.accountant, evaluations
        )
    except ValueError as err:
        raise BudgetExhausted(f"declined: {err}") from None


@functools.lru_cache(maxsize=32)
def _calibrated(target: float, delta: float, sample_rate: float, steps: int, accountant: str, reserved: tuple) -> float:
    return calibrate_noise(
        target_epsilon=target,
        delta=delta,
        sample_rate=sample_rate,
        steps=steps,
        accountant=accountant,
        reserved=reserved,
    )
