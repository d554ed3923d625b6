"""Messages and contexts as a SuperNode receives them, for driving the real ClientApp in tests."""

from __future__ import annotations

import copy

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


class RecordingGrid:
    """The server's Grid, keeping a copy of every reply that reaches the server."""

    def __init__(self, grid) -> None:
        self.grid, self.replies = grid, []

    def send_and_receive(self, messages, *, timeout=None):
        replies = list(self.grid.send_and_receive(messages, timeout=timeout))
        self.replies.extend(replies)
        return replies

    def pull_messages(self, message_ids):  # what the ServerApp's PromptGrid uses
        replies = list(self.grid.pull_messages(message_ids))
        self.replies.extend(replies)
        return replies

    def __getattr__(self, name):
        return getattr(self.grid, name)


class InProcessGrid:
    """A Grid that hands each message to ``client_app`` in this process, one Context per node:
    the server's workflows (SecAgg+ included) talk to real ClientApps whose internals a test can
    instrument. ``replies`` keeps everything that reached the server."""

    def __init__(self, client_app, node_configs: dict[int, dict], *, run_config: dict | None = None) -> None:
        from types import SimpleNamespace

        self.app, self.replies, self.pending = client_app, [], {}
        self.run = SimpleNamespace(run_id=1)
        self.contexts = {node: Context(run_id=1, node_id=node, node_config=config, state=RecordDict(),
                                       run_config=run_config or {}) for node, config in node_configs.items()}

    def get_node_ids(self):
        return list(self.contexts)

    def send_and_receive(self, messages, *, timeout=None):
        # Each node gets its own copy, as over the wire (SecAgg+ shares one content between nodes).
        replies = [self.app(copy.deepcopy(m), self.contexts[m.metadata.dst_node_id]) for m in messages]
        self.replies.extend(replies)
        return replies

    def push_messages(self, messages):
        """Answer each message at once (a reply of None: the node never answers); their ids."""
        ids = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = f"m{len(self.pending) + len(ids)}-{id(message)}"
            ids.append(message.metadata.message_id)
            reply = self.app(copy.deepcopy(message), self.contexts[message.metadata.dst_node_id])
            if reply is not None:
                reply.metadata.__dict__["_reply_to_message_id"] = message.metadata.message_id
                self.pending[message.metadata.message_id] = reply
        return ids

    def pull_messages(self, message_ids):
        replies = [self.pending.pop(i) for i in list(message_ids) if i in self.pending]
        self.replies.extend(replies)
        return replies
