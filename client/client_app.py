"""PrivRec ClientApp: train and evaluate on this client's encrypted local store, under its owner's
privacy policy.

Every message is answered in the same order: find the device (store, secret, policy), refuse a
run that asks for less privacy than the policy, open the store and lock its privacy ledger,
then train or evaluate within the budget. Under distributed DP the train messages are SecAgg+
stages instead, answered through ``secaggplus_mod`` (``client/secure_release.py``). Everything it
sends passes the egress guard: the agreed tensors and allowed numbers, or an error code with a
fixed reason.

In deployment Flower 1.42 starts a fresh ClientApp process for every message, so this module and
what it imports stay light: the model's libraries (torch, transformers, PEFT) are imported by the
handlers that train or score, Opacus by the ledger when it must compute an epsilon it has not
kept, and the anonymiser only where a simulated device prepares its store.
"""

from __future__ import annotations

import logging

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.clientapp.mod import fixedclipping_mod

from client.device import Device, run_settings
from client.egress import EgressGuard
from client.local_data import ClientData
from client.secure_release import secure_release_mod
from common import records
from common.config import RunConfig

log = logging.getLogger(__name__)


def build_client_app(config: RunConfig | None = None) -> ClientApp:
    """A ClientApp for ``config``; without one it reads ``context.run_config`` (``flwr run``)."""
    app = ClientApp(mods=[EgressGuard(config)])

    def policy_gate(msg: Message, context: Context, call_next) -> Message:
        # Before anything else touches the round: refuse a run asking for less than the policy.
        cfg = run_settings(config, context)
        Device.locate(cfg, context).policy.admit(cfg)  # raises PolicyRefusal
        return call_next(msg, context)

    def central_clipping(msg: Message, context: Context, call_next) -> Message:
        # Central DP: Flower's fixedclipping_mod bounds this client's update (train only).
        cfg = run_settings(config, context)
        if cfg.dp == "central":
            return fixedclipping_mod(msg, context, call_next)
        return call_next(msg, context)

    @app.train(mods=[policy_gate, central_clipping, secure_release_mod(config)])
    def train(msg: Message, context: Context) -> Message:
        from client.local_training import train_locally

        cfg = run_settings(config, context)
        device = Device.locate(cfg, context)
        data = device.data(cfg)
        with device.ledger(data) as ledger:
            content = train_locally(
                msg, data, cfg, policy=device.policy, ledger=ledger, client_seed=_client_seed(context)
            )
        return Message(content=content, reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        from client.local_evaluation import evaluate_locally

        cfg = run_settings(config, context)
        device = Device.locate(cfg, context)
        data = device.data(cfg)
        with device.ledger(data) as ledger:
            content = evaluate_locally(msg, data, cfg, policy=device.policy, ledger=ledger)
        return Message(content=content, reply_to=msg)

    return app


def open_local_data(cfg: RunConfig, context: Context) -> ClientData:
    """This node's decrypted store (cached), split, and the public catalogue."""
    return Device.locate(cfg, context).data(cfg)


def _client_seed(context: Context) -> int:
    # A stable per-client seed for non-DP rounds: the partition in simulation, the node id in deployment.
    return int(context.node_config.get(records.PARTITION_ID, context.node_id))


app = build_client_app()
