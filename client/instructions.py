"""Reading the server's instructions defensively: what a message may ask, and the error when it cannot
be used. Light on purpose (no torch): every ClientApp process imports it, whatever the message."""

from __future__ import annotations

from flwr.app import Message

from common import records


class BadRequest(ValueError):
    """The server's message cannot be used (missing records, wrong tensors, bad config)."""


def server_round(msg: Message) -> int:
    """The round number the server's config names (0 when absent)."""
    config = msg.content.get(records.CONFIG)
    value = config.get(records.SERVER_ROUND, 0) if config is not None else 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"`{records.SERVER_ROUND}` should be an integer")
    return value
