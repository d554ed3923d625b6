"""Messages and contexts as a SuperNode receives them, for driving the real ClientApp in tests."""

from __future__ import annotations

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict

from common import records
from common.model import build_model, trainable_state
from common.run_data import load_catalogue


def initial_state(cfg) -> dict:
    """The global model's trainable tensors before any round."""
    return trainable_state(build_model(cfg, num_items=len(load_catalogue(cfg))))


def message(cfg, kind: str = MessageType.TRAIN, *, state: dict | None = None, server_round: int = 1,
            **config) -> Message:
    """A train or evaluate instruction carrying ``state`` (default: the initial tensors)."""
    content = RecordDict({records.ARRAYS: ArrayRecord(state if state is not None else initial_state(cfg)),
                          records.CONFIG: ConfigRecord({records.SERVER_ROUND: server_round, **config})})
    return Message(content=content, dst_node_id=1, message_type=kind)


def evaluate_message(cfg, *, target: str = "valid", **kwargs) -> Message:
    """An evaluate instruction."""
    return message(cfg, MessageType.EVALUATE, **{records.EVAL_TARGET: target}, **kwargs)


def node_context(node_config: dict, *, run_config: dict | None = None) -> Context:
    """The Context a ClientApp gets on a SuperNode with ``node_config``."""
    return Context(run_id=1, node_id=1, node_config=node_config, state=RecordDict(), run_config=run_config or {})


def simulated_context(partition: int, *, clients: int = 3) -> Context:
    """The Context of simulated client ``partition``."""
    return node_context({records.PARTITION_ID: partition, records.NUM_PARTITIONS: clients})
