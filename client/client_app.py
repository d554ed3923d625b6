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

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client.egress import egress_guard
from client.encryption import Secret
from client.local_data import ClientData
from client.secrets import resolve_secret
from client.simulated_devices import device_files, prepare_simulated_devices
from common import records
from common.config import RunConfig
from common.recommender import Recommender
from common.run_data import load_catalogue

log = logging.getLogger(__name__)


def build_client_app(config: RunConfig | None = None) -> ClientApp:
    """A ClientApp for ``config``; without one it reads ``context.run_config`` (``flwr run``)."""
    app = ClientApp(mods=[egress_guard])

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        cfg = config or RunConfig.from_mapping(context.run_config)
        # A stable per-client seed: the partition in simulation, the node id in deployment.
        client_seed = int(context.node_config.get(records.PARTITION_ID, context.node_id))
        return Message(content=train_locally(msg, open_local_data(cfg, context), cfg,
                                             client_seed=client_seed), reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        cfg = config or RunConfig.from_mapping(context.run_config)
        return Message(content=evaluate_locally(msg, open_local_data(cfg, context), cfg),
                       reply_to=msg)

    return app


def open_local_data(cfg: RunConfig, context: Context) -> ClientData:
    """This node's store: from its node config (deployment) or its simulated device."""
    node = context.node_config
    catalogue = load_catalogue(cfg)
    if records.STORE in node:
        secret = _secret(str(node.get(records.KEY_FILE, "")), str(node.get(records.PASSPHRASE_FILE, "")),
                         str(node.get(records.PASSPHRASE_ENV, "")))
        return ClientData.load(str(node[records.STORE]), secret, catalogue)
    partition = int(node[records.PARTITION_ID])
    store, key_file = device_files(cfg, partition)
    if not store.is_file():
        prepare_simulated_devices(cfg, [partition], progress=False)
    return ClientData.load(store, _secret(str(key_file), "", ""), catalogue)


@functools.lru_cache(maxsize=8)
def _secret(key_file: str, passphrase_file: str, passphrase_env: str) -> Secret:
    # One Secret per source and process, so a passphrase's derived key is reused across rounds.
    return resolve_secret(key_file=key_file or None, passphrase_file=passphrase_file or None,
                          passphrase_env=passphrase_env or None)


def train_locally(msg: Message, data: ClientData, cfg: RunConfig, *, client_seed: int = 0) -> RecordDict:
    """Load the global adapter, train it on this client's users, return only adapter tensors."""
    started = time.perf_counter()
    server_round = int(msg.content[records.CONFIG].get(records.SERVER_ROUND, 0))
    recommender = Recommender(cfg, data.catalogue)
    recommender.load_state(msg.content[records.ARRAYS].to_torch_state_dict())

    rng = random.Random(f"{cfg.seed}-{client_seed}-{server_round}")
    torch.manual_seed(rng.randrange(2**31))
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
    }
    return RecordDict({records.ARRAYS: ArrayRecord(recommender.state()),
                       records.METRICS: MetricRecord(metrics)})


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
