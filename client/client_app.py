"""PrivRec ClientApp: local training of the adapters on this client's own users."""

from __future__ import annotations

import logging
import random
import time

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from common import records
from common.config import RunConfig
from common.recommender import Recommender
from common.run_data import RunData

log = logging.getLogger(__name__)


def build_client_app(config: RunConfig | None = None) -> ClientApp:
    """A ClientApp for ``config``; without one it reads ``context.run_config`` (``flwr run``)."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        cfg = config or RunConfig.from_mapping(context.run_config)
        return Message(content=train_locally(msg, context, cfg), reply_to=msg)

    return app


def train_locally(msg: Message, context: Context, cfg: RunConfig) -> RecordDict:
    """Load the global adapter, train it on this client's users, return only adapter tensors."""
    started = time.perf_counter()
    partition_id = int(context.node_config[records.PARTITION_ID])
    server_round = int(msg.content[records.CONFIG].get(records.SERVER_ROUND, 0))
    data = RunData.load(cfg)
    users = data.client_users(cfg, partition_id)

    recommender = Recommender(cfg, data.catalogue)
    recommender.load_state(msg.content[records.ARRAYS].to_torch_state_dict())

    rng = random.Random(f"{cfg.seed}-{partition_id}-{server_round}")
    torch.manual_seed(rng.randrange(2**31))
    result = recommender.train(users, data.split, rng=rng)
    log.info("client %d round %d: %d users, %d steps, loss %.4f -> %.4f", partition_id,
             server_round, result.num_examples, result.steps, result.first_loss, result.last_loss)
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


app = build_client_app()
