"""PrivRec ClientApp: train and evaluate on this client's encrypted local store.

Everything it reads comes from the client's own store (decrypted in memory); everything it
sends passes the egress guard: adapter tensors and numeric metrics only.
"""

from __future__ import annotations

import functools
import logging
import math
import random
import time

from pathlib import Path

import torch
from flwr.app import ArrayRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.mod import fixedclipping_mod

from client.dp_training import sample_rate, train_private
from client.egress import egress_guard
from client.encryption import Secret
from client.local_data import ClientData
from client.privacy_ledger import BudgetExhausted, PrivacyLedger
from client.secrets import resolve_secret
from client.simulated_devices import device_files, prepare_simulated_devices
from common import records
from common.config import RunConfig
from common.recommender import Recommender, planned_steps
from common.run_data import load_catalogue

log = logging.getLogger(__name__)


def build_client_app(config: RunConfig | None = None) -> ClientApp:
    """A ClientApp for ``config``; without one it reads ``context.run_config`` (``flwr run``)."""
    app = ClientApp(mods=[egress_guard])

    def central_clipping(msg: Message, context: Context, call_next) -> Message:
        # Central DP: Flower's fixedclipping_mod bounds this client's update (train only).
        cfg = config or RunConfig.from_mapping(context.run_config)
        if cfg.dp == "central":
            return fixedclipping_mod(msg, context, call_next)
        return call_next(msg, context)

    @app.train(mods=[central_clipping])
    def train(msg: Message, context: Context) -> Message:
        cfg = config or RunConfig.from_mapping(context.run_config)
        # A stable per-client seed: the partition in simulation, the node id in deployment.
        client_seed = int(context.node_config.get(records.PARTITION_ID, context.node_id))
        store, secret = locate_store(cfg, context)
        try:
            content = train_locally(msg, open_local_data(cfg, context), cfg, client_seed=client_seed,
                                    ledger=(ledger_path(store), secret))
        except BudgetExhausted as err:
            log.warning("%s", err)
            return Message(error=Error(code=records.BUDGET_EXHAUSTED, reason=str(err)), reply_to=msg)
        return Message(content=content, reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        cfg = config or RunConfig.from_mapping(context.run_config)
        return Message(content=evaluate_locally(msg, open_local_data(cfg, context), cfg),
                       reply_to=msg)

    return app


def locate_store(cfg: RunConfig, context: Context) -> tuple[Path, Secret]:
    """This node's store and its secret: from its node config (deployment) or its simulated device."""
    node = context.node_config
    if records.STORE in node:
        secret = _secret(str(node.get(records.KEY_FILE, "")), str(node.get(records.PASSPHRASE_FILE, "")),
                         str(node.get(records.PASSPHRASE_ENV, "")))
        return Path(str(node[records.STORE])), secret
    partition = int(node[records.PARTITION_ID])
    store, key_file = device_files(cfg, partition)
    if not store.is_file():
        prepare_simulated_devices(cfg, [partition], progress=False)
    return store, _secret(str(key_file), "", "")


def ledger_path(store: Path) -> Path:
    """The privacy ledger kept beside a store."""
    return store.with_name(store.name + ".ledger")


def open_local_data(cfg: RunConfig, context: Context) -> ClientData:
    """This node's decrypted store (cached), split, and the public catalogue."""
    store, secret = locate_store(cfg, context)
    return ClientData.load(store, secret, load_catalogue(cfg))


@functools.lru_cache(maxsize=8)
def _secret(key_file: str, passphrase_file: str, passphrase_env: str) -> Secret:
    # One Secret per source and process, so a passphrase's derived key is reused across rounds.
    return resolve_secret(key_file=key_file or None, passphrase_file=passphrase_file or None,
                          passphrase_env=passphrase_env or None)


def train_locally(msg: Message, data: ClientData, cfg: RunConfig, *, client_seed: int = 0,
                  ledger: tuple[Path, Secret] | None = None) -> RecordDict:
    """Load the global adapter, train it on this client's users, return only adapter tensors.

    With ``dp`` = "local" the training is DP-SGD and every step goes into the ledger (a path and
    the secret that encrypts it); raises :class:`BudgetExhausted` before training if this round
    would pass the budget.
    """
    started = time.perf_counter()
    server_round = int(msg.content[records.CONFIG].get(records.SERVER_ROUND, 0))
    recommender = Recommender(cfg, data.catalogue)
    recommender.load_state(msg.content[records.ARRAYS].to_torch_state_dict())

    rng = random.Random(f"{cfg.seed}-{client_seed}-{server_round}")
    torch.manual_seed(rng.randrange(2**31))
    dp_metrics: dict[str, float] = {}
    if cfg.dp == "local":
        if ledger is None:
            raise ValueError("`dp` is 'local' but no ledger path was given; this is a bug.")
        result, dp_metrics = _train_private(recommender, data, cfg, rng, server_round, *ledger)
    else:
        result = recommender.train(data.users, data.split, rng=rng)
    log.info("round %d: %d users, %d steps, loss %.4f -> %.4f", server_round, result.num_examples,
             result.steps, result.first_loss, result.last_loss)
    metrics = {
        records.NUM_EXAMPLES: result.num_examples,
        records.NUM_STEPS: result.steps,
        records.EXAMPLES_SEEN: result.examples_seen,
        records.TRAIN_LOSS: result.mean_loss,
        records.TRAIN_LOSS_FIRST: result.first_loss,
        records.TRAIN_LOSS_LAST: result.last_loss,
        records.TRAIN_SECONDS: time.perf_counter() - started,
        **dp_metrics,
    }
    if cfg.dp == "central":
        metrics[records.UNIFORM_WEIGHT] = 1
    state = recommender.state()
    if cfg.upload_dtype == "float16":  # half the bytes on the wire; the server averages in float32
        state = {name: tensor.to(torch.float16) for name, tensor in state.items()}
    return RecordDict({records.ARRAYS: ArrayRecord(state), records.METRICS: MetricRecord(metrics)})


def _train_private(recommender: Recommender, data: ClientData, cfg: RunConfig, rng: random.Random,
                   server_round: int, path: Path, secret: Secret):
    """DP-SGD for one round, checked against and recorded in the client's ledger."""
    users = data.users
    delta = cfg.target_delta or 1.0 / (10 * len(users))
    ledger = PrivacyLedger.open(path, secret, accountant=cfg.accountant, delta=delta,
                                target_epsilon=cfg.target_epsilon)
    q = sample_rate(len(users), cfg.dp_batch_size)
    steps = planned_steps(len(users), cfg)
    noise = ledger.calibrate(sample_rate=q, planned_steps=steps * cfg.num_rounds,
                             noise_multiplier=cfg.noise_multiplier)
    ledger.check_budget(sample_rate=q, steps=steps)  # raises BudgetExhausted
    result, history = train_private(recommender, users, data.split, rng=rng, steps=steps,
                                    noise_multiplier=noise, max_grad_norm=cfg.max_grad_norm,
                                    accountant=cfg.accountant)
    spent = ledger.record(history, secret=secret, server_round=server_round)
    log.info("round %d: epsilon spent %.3f of %g (delta %.1e)", server_round, spent,
             cfg.target_epsilon, delta)
    return result, {records.EPSILON: spent, records.DELTA: delta, records.NOISE_MULTIPLIER: noise}


def evaluate_locally(msg: Message, data: ClientData, cfg: RunConfig) -> RecordDict:
    """Rank each local user's held-out item with the global model; reply with metric means only."""
    started = time.perf_counter()
    target = str(msg.content[records.CONFIG].get(records.EVAL_TARGET, "valid"))
    if target not in ("valid", "test"):
        raise ValueError(f"`{records.EVAL_TARGET}` should be 'valid' or 'test', got {target!r}.")
    limit = math.ceil(cfg.max_eval_users / cfg.num_clients) if target == "valid" else 0
    users = data.eval_users(target, limit=limit, seed=cfg.seed)
    metrics: dict[str, float] = {}
    if users:
        recommender = Recommender(cfg, data.catalogue)
        recommender.load_state(msg.content[records.ARRAYS].to_torch_state_dict())
        metrics = recommender.evaluate(users, data.split, target=target)
        metrics.pop("num-users", None)
    metrics.update({records.NUM_EXAMPLES: len(users), records.EVAL_USERS: len(users),
                    records.EVAL_SECONDS: time.perf_counter() - started})
    return RecordDict({records.METRICS: MetricRecord(metrics)})


app = build_client_app()
