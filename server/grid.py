"""The ServerApp's Grid, answering as soon as the replies are in.

Flower 1.42's deployment Grid pulls the replies of ``send_and_receive`` every 3 seconds. A PrivRec
run exchanges many short messages (each SecAgg+ release is four rounds of them, each evaluation
one), so in deployment that sleep was a large part of a run's wall time. :class:`PromptGrid` sends
through the Grid's own ``push_messages`` and pulls with a short back-off instead (50 ms, doubling
to at most 1 s); everything else is the wrapped Grid's.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.run import Run

FIRST_PULL_SECONDS = 0.05
MAX_PULL_SECONDS = 1.0


class DelegatingGrid(Grid):
    """A Grid that hands every call to ``grid``; subclasses change one of them."""

    def __init__(self, grid: Grid) -> None:
        self.grid = grid

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return self.grid.send_and_receive(messages, timeout=timeout)

    def set_run(self, run: Run) -> None:
        self.grid.set_run(run)

    @property
    def run(self) -> Run:
        return self.grid.run

    def create_message(
        self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str, ttl: float | None = None
    ) -> Message:
        return self.grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self.grid.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self.grid.pull_messages(message_ids)

    def __getattr__(self, name: str) -> Any:  # anything a concrete Grid adds
        return getattr(self.grid, name)


class PromptGrid(DelegatingGrid):
    """``grid`` with a prompter ``send_and_receive``."""

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        """Push ``messages``, then pull their replies until all are in or ``timeout`` seconds passed."""
        waiting = set(self.grid.push_messages(messages))
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        pause = FIRST_PULL_SECONDS
        while waiting:
            pulled = list(self.grid.pull_messages(waiting))
            replies += pulled
            waiting -= {m.metadata.reply_to_message_id for m in pulled}
            if not waiting or (deadline is not None and time.monotonic() >= deadline):
                break
            time.sleep(pause if deadline is None else max(0.0, min(pause, deadline - time.monotonic())))
            pause = min(2 * pause, MAX_PULL_SECONDS)
        return replies
