"""The ClientApp's real reply: only the agreed adapter tensors and numeric metrics leave it."""

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict

from client.client_app import build_client_app
from common import records
from common.model import build_model, trainable_state
from common.run_data import RunData

ALLOWED_METRICS = {records.NUM_EXAMPLES, records.NUM_STEPS, records.EXAMPLES_SEEN, records.TRAIN_LOSS,
                   records.TRAIN_LOSS_FIRST, records.TRAIN_LOSS_LAST, records.TRAIN_SECONDS}


@pytest.fixture()
def task_identity(monkeypatch):
    from flwr.supercore.task_identity import TaskIdentity

    for attr in ("_task_id", "_run_id", "_node_id"):
        monkeypatch.setattr(TaskIdentity, attr, 1)


@pytest.mark.parametrize("item_embeddings", [False, True])
def test_when_client_trains_then_reply_holds_only_adapter_tensors_and_numbers(
        tiny_config, task_identity, item_embeddings):
    cfg = tiny_config.replace(item_embeddings=item_embeddings, local_steps=2)
    data = RunData.load(cfg)
    initial = trainable_state(build_model(cfg, num_items=len(data.catalogue)))
    msg = Message(content=RecordDict({records.ARRAYS: ArrayRecord(initial),
                                      records.CONFIG: ConfigRecord({records.SERVER_ROUND: 1})}),
                  dst_node_id=1, message_type="train")
    context = Context(run_id=1, node_id=1, node_config={records.PARTITION_ID: 1, records.NUM_PARTITIONS: 3},
                      state=RecordDict(), run_config={})

    reply = build_client_app(cfg)(msg, context)

    assert not reply.has_error(), reply.error
    assert set(reply.content.keys()) == {records.ARRAYS, records.METRICS}
    arrays = reply.content[records.ARRAYS].to_torch_state_dict()
    assert set(arrays) == set(initial)
    assert all(tuple(arrays[k].shape) == tuple(initial[k].shape) for k in initial)
    assert any(not torch.equal(arrays[k], initial[k]) for k in initial)
    metrics = reply.content[records.METRICS]
    assert set(metrics) <= ALLOWED_METRICS
    assert all(isinstance(v, (int, float)) for v in metrics.values())
    assert metrics[records.NUM_EXAMPLES] == len(data.client_users(cfg, 1))
    # No string from the client's data rides along anywhere in the reply.
    text = repr(reply.content)
    for user in data.client_users(cfg, 1)[:20]:
        assert user not in text
