"""One short real federation: 3 simulated clients, 2 rounds, tiny BERT, demo data."""

import csv
import json

import pytest
import torch

from common.config import RunConfig
from common.model import build_model, load_checkpoint, trainable_state
from common.run_data import RunData
from server.simulation import simulate

N_ITEMS = len(RunData.load(RunConfig()).catalogue)  # the demo catalogue the run uses


@pytest.fixture(scope="module")
def finished_run(tiny_bert, tmp_path_factory):
    cfg = RunConfig(model_path=str(tiny_bert), embed_dim=16, max_profile_tokens=48, max_item_tokens=16,
                    num_clients=3, num_rounds=2, local_epochs=2, learning_rate=5e-3, patience=0,
                    run_dir=str(tmp_path_factory.mktemp("runs")), device="cpu")
    return cfg, simulate(cfg, run_name="e2e", cpus_per_client=1)


def test_when_run_finishes_then_run_directory_is_complete(finished_run):
    cfg, path = finished_run
    for name in ("config.json", "metrics.json", "metrics.csv", "summary.json", "run.log"):
        assert (path / name).is_file(), name
    for which in ("best", "last"):
        for name in ("adapter_config.json", "adapter_model.safetensors", "heads.safetensors"):
            assert (path / "checkpoints" / which / name).is_file()
    assert json.loads((path / "config.json").read_text())["num-rounds"] == 2
    rows = list(csv.DictReader((path / "metrics.csv").open()))
    assert [int(r["round"]) for r in rows] == [0, 1, 2]
    assert all(0 <= float(r["valid-ndcg@10"]) <= 1 for r in rows)
    summary = json.loads((path / "summary.json").read_text())
    assert summary["rounds-trained"] == 2 and summary["test"]["num-users"] == 300


def test_when_rounds_trained_then_every_client_took_part_and_loss_fell(finished_run):
    _, path = finished_run
    trained = [r for r in json.loads((path / "metrics.json").read_text()) if "clients" in r]
    assert [r["clients"] for r in trained] == [3, 3]
    assert trained[1]["train-loss"] < trained[0]["train-loss"]


def test_when_run_finishes_then_adapter_differs_from_initial(finished_run):
    cfg, path = finished_run
    initial = trainable_state(build_model(cfg, num_items=N_ITEMS))
    final = trainable_state(load_checkpoint(path / "checkpoints" / "last", cfg, num_items=N_ITEMS))
    assert set(initial) == set(final)
    changed = [k for k in initial if not torch.allclose(initial[k], final[k])]
    assert any("lora_B" in k for k in changed)
    assert any(k.startswith("item_proj") for k in changed) and "item_embedding" in changed


def test_when_clients_upload_then_bytes_match_adapter_size(finished_run):
    cfg, path = finished_run
    trained = [r for r in json.loads((path / "metrics.json").read_text()) if "clients" in r]
    state = trainable_state(build_model(cfg, num_items=N_ITEMS))
    adapter_bytes = sum(t.numel() * 4 for t in state.values())
    full_bytes = sum(p.numel() * 4 for p in build_model(cfg, num_items=N_ITEMS).parameters())
    upload = trained[0]["upload-bytes-per-client"]
    assert adapter_bytes <= upload < adapter_bytes + 200 * len(state)  # + a .npy header per tensor
    assert upload < full_bytes / 4


def test_when_run_name_exists_then_refused_without_touching_it(finished_run):
    cfg, path = finished_run
    before = (path / "summary.json").read_text()
    with pytest.raises(FileExistsError, match="already exists"):
        simulate(cfg, run_name="e2e")
    assert (path / "summary.json").read_text() == before
