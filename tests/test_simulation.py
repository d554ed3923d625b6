"""One short real federation: 3 simulated clients, 2 rounds, tiny BERT, demo data.

Every message a client sends to the server is recorded on the server's side of the grid and
inspected: only the agreed adapter tensors and numeric metrics, nothing from the data.
"""

import csv
import json
import re

import numpy as np
import pytest
import torch

import server.server_app
from client.egress import EVALUATE_METRICS, TRAIN_METRICS
from client.encryption import Secret
from client.privacy_ledger import state_dir
from client.simulated_devices import device_files, stores_dir
from client.store import LocalStore
from common import records
from common.config import RunConfig
from common.model import build_model, load_checkpoint, trainable_state
from common.run_data import RunData
from server.simulation import simulate
from helpers import RecordingGrid

N_ITEMS = len(RunData.load(RunConfig()).catalogue)  # the demo catalogue the run uses


@pytest.fixture(scope="module")
def finished_run(tiny_bert, tmp_path_factory, stores_root):
    cfg = RunConfig(dp="none", model_path=str(tiny_bert), embed_dim=16, max_profile_tokens=48, max_item_tokens=16,
                    num_clients=3, num_rounds=2, local_epochs=2, learning_rate=5e-3, patience=0,
                    run_dir=str(tmp_path_factory.mktemp("runs")), device="cpu",
                    stores_dir=str(stores_root))
    grids = []
    real = server.server_app.run_federation

    def recording(grid, cfg, **kwargs):
        grids.append(RecordingGrid(grid))
        return real(grids[-1], cfg, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(server.server_app, "run_federation", recording)
        path = simulate(cfg, run_name="e2e", cpus_per_client=1, progress=False)
    return cfg, path, grids[0].replies


def test_when_run_finishes_then_run_directory_is_complete(finished_run):
    cfg, path, _ = finished_run
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


def test_when_rounds_trained_then_every_client_took_part_with_its_planned_steps(finished_run):
    _, path, _ = finished_run
    trained = [r for r in json.loads((path / "metrics.json").read_text()) if "clients" in r]
    assert [r["clients"] for r in trained] == [3, 3]
    # Whether the tiny model's loss falls within 2 rounds depends on the stores' random pseudonyms (the
    # batches); that training lowers the loss is tested on a fixed seed in test_model.py.
    assert all(r["train-num-steps"] > 0 and r["examples-seen"] > 0 and 0 < r["train-loss"] < 20 for r in trained)


def test_when_run_finishes_then_adapter_differs_from_initial(finished_run):
    cfg, path, _ = finished_run
    initial = trainable_state(build_model(cfg, num_items=N_ITEMS))
    final = trainable_state(load_checkpoint(path / "checkpoints" / "last", cfg, num_items=N_ITEMS))
    assert set(initial) == set(final)
    changed = [k for k in initial if not torch.allclose(initial[k], final[k])]
    assert any("lora_B" in k for k in changed)
    assert any(k.startswith("item_proj") for k in changed) and "item_embedding.weight" in changed


def test_when_clients_upload_then_bytes_match_adapter_size(finished_run):
    cfg, path, _ = finished_run
    trained = [r for r in json.loads((path / "metrics.json").read_text()) if "clients" in r]
    state = trainable_state(build_model(cfg, num_items=N_ITEMS))
    adapter_bytes = sum(t.numel() * 4 for t in state.values())
    full_bytes = sum(p.numel() * 4 for p in build_model(cfg, num_items=N_ITEMS).parameters())
    upload = trained[0]["upload-bytes-per-client"]
    assert adapter_bytes <= upload < adapter_bytes + 200 * len(state)  # + a .npy header per tensor
    assert upload < full_bytes / 4


def test_when_run_name_exists_then_refused_without_touching_it(finished_run):
    cfg, path, _ = finished_run
    before = (path / "summary.json").read_text()
    with pytest.raises(FileExistsError, match="already exists"):
        simulate(cfg, run_name="e2e")
    assert (path / "summary.json").read_text() == before


def _data_strings(cfg) -> set[str]:
    """Strings a leak would carry: raw user ids and names, pseudonyms, words of review texts."""
    data = RunData.load(cfg)
    strings = {r.user_id for r in data.data.reviews} | {r.reviewer_name for r in data.data.reviews if r.reviewer_name}
    strings |= {w for r in data.data.reviews[:300] for w in re.findall(r"[A-Za-z]{9,}", r.text)}
    for partition in range(cfg.num_clients):
        store, key = device_files(cfg, partition)
        strings |= {r.user_id for r in LocalStore.open(store, Secret.from_key_file(key)).reviews}
    return strings


def test_every_client_message_holds_only_agreed_tensors_and_numbers(finished_run):
    cfg, _, replies = finished_run
    agreed = {k: tuple(v.shape) for k, v in trainable_state(build_model(cfg, num_items=N_ITEMS)).items()}
    kinds = {r.metadata.message_type for r in replies}
    assert kinds == {"train", "evaluate"} and len(replies) == 3 * 2 + 3 * 4  # 2 train rounds; 4 evaluations
    leaks = _data_strings(cfg)
    for reply in replies:
        assert not reply.has_error(), reply.error
        content = reply.content
        assert not content.config_records  # no strings travel at all
        if reply.metadata.message_type == "train":
            assert set(content.keys()) == {records.ARRAYS, records.METRICS}
            arrays = content[records.ARRAYS]
            assert {k: tuple(v.shape) for k, v in arrays.items()} == agreed  # no per-user tensors
            assert all(str(v.dtype) == "float32" for v in arrays.values())
            assert set(content[records.METRICS]) <= TRAIN_METRICS
        else:
            assert set(content.keys()) == {records.METRICS}
            assert set(content[records.METRICS]) <= EVALUATE_METRICS | {"hr@10", "ndcg@10"}
        for value in content[records.METRICS].values():
            assert isinstance(value, (int, float)) and np.isfinite(value)
        blob = b"".join(a.data for a in content.array_records[records.ARRAYS].values()) if records.ARRAYS in content else b""
        names = " ".join(list(content.keys()) + [k for rec in content.values() for k in rec.keys()])
        for value in leaks:
            assert value not in names and value.encode() not in blob


def test_when_run_finishes_then_clients_evaluated_not_the_server(finished_run):
    _, path, _ = finished_run
    summary = json.loads((path / "summary.json").read_text())
    assert summary["evaluation"] == "federated" and summary["test"]["clients"] == 3


def test_when_run_finishes_then_no_review_plaintext_is_on_disk_or_in_logs(finished_run):
    """"Decrypted into memory only": every file the run and its devices left behind (run directory,
    log, checkpoints, stores, key files, ledgers, policies, ledger anchors) is scanned for what a
    leak would carry."""
    cfg, path, _ = finished_run
    reviews = RunData.load(cfg).data.reviews
    needles = {r.user_id for r in reviews} | {r.reviewer_name for r in reviews if r.reviewer_name}
    needles |= {t[:40] for r in reviews for t in (r.text, r.summary) if len(t) >= 40}
    files = [f for root in (path, stores_dir(cfg), state_dir()) for f in root.rglob("*") if f.is_file()]
    assert any(f.name == "run.log" for f in files) and any(f.suffix == ".prv" for f in files)
    assert any(f.name.endswith(".ledger") for f in files)
    for file in files:
        blob = file.read_bytes()
        found = [n for n in needles if n.encode() in blob]
        assert not found, f"{file} holds {found[:3]}"


def test_when_simulate_runs_then_its_console_is_short_quiet_and_has_no_duplicate_lines(tiny_bert, tmp_path,
                                                                                        stores_root):
    """`privrec simulate` on the demo data, as a person runs it (the default distributed DP, a tiny
    model): one line per round, the result table, no library warnings, nothing twice."""
    import subprocess
    import sys
    from pathlib import Path

    from client.simulated_devices import prepare_simulated_devices, reset_ledgers

    tiny = dict(model_path=str(tiny_bert), embed_dim=16, max_profile_tokens=48, max_item_tokens=16, num_clients=3)
    cfg = RunConfig(**tiny, stores_dir=str(stores_root))
    prepare_simulated_devices(cfg, progress=False)
    reset_ledgers(cfg, reason="test: a new federation")
    command = [str(Path(sys.executable).parent / "privrec"), "simulate", "--clients", "3", "--run-dir",
               str(tmp_path / "runs"), *(f"--set={k.replace('_', '-')}={v}" for k, v in tiny.items() if k != "num_clients"),
               f"--set=stores-dir={stores_root}"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    finally:
        reset_ledgers(cfg, reason="test: leave the shared stores unspent")
    console = (result.stdout + result.stderr).splitlines()
    assert result.returncode == 0, "\n".join(console[-30:])
    assert len(console) <= 40, "\n".join(console)
    assert not [line for line in console if re.search(r"warn|debug|deprecat|error", line, re.I)], "\n".join(console)
    text = [line for line in console if re.search(r"[A-Za-z0-9]", line)]  # table borders repeat by design
    assert len(text) == len(set(text)), "\n".join(console)
    assert sum("round " in line and " · " in line for line in console) == 2  # round 0 (untrained) and 1
    assert any(line.startswith("run directory: ") for line in console)
    run_log = next((tmp_path / "runs").iterdir()) / "run.log"
    assert "INFO flwr" in run_log.read_text()  # what the console leaves out is in the run's log


def test_when_a_run_is_resumed_from_the_command_line_then_it_continues_its_own_directory(finished_run, tmp_path):
    """`privrec simulate --resume RUN_DIR` on a run killed after its last round but before the test:
    the rounds stay, the best round is scored on the test items, the summary says it was resumed."""
    import shutil

    from typer.testing import CliRunner

    from common.cli import app

    _, path, _ = finished_run
    cut = tmp_path / "runs" / "cut"
    shutil.copytree(path, cut)
    (cut / "summary.json").unlink()  # killed before the test
    runner = CliRunner()
    refused = runner.invoke(app, ["simulate", "--resume", str(cut), "--set", "learning-rate=0.1"])
    assert refused.exit_code == 2 and "--resume continues a run with the config in its directory" in refused.output
    result = runner.invoke(app, ["simulate", "--resume", str(cut)])
    assert result.exit_code == 0, result.output
    summary, reference = (json.loads((p / "summary.json").read_text()) for p in (cut, path))
    assert summary["resumed-after-round"] == 2 and summary["best-round"] == reference["best-round"]
    assert summary["test"]["ndcg@10"] == pytest.approx(reference["test"]["ndcg@10"], abs=1e-6)
    assert json.loads((cut / "metrics.json").read_text()) == json.loads((path / "metrics.json").read_text())
    assert "resuming after round 2" in (cut / "run.log").read_text()
    # Each start is a Flower run of its own; the audit collects what the devices sent in both.
    assert summary["run-ids"] == [reference["run-id"], summary["run-id"]] and summary["run-id"] != reference["run-id"]
    from server.audit import collect

    sent = {e["run"] for device in collect(cut)["devices"] for e in device["sent"]}
    assert sent == set(summary["run-ids"])
    again = runner.invoke(app, ["simulate", "--resume", str(cut)])
    assert again.exit_code == 2 and "there is nothing to resume" in again.output
    elsewhere = runner.invoke(app, ["simulate", "--resume", str(tmp_path)])
    assert elsewhere.exit_code == 2 and "not a run directory" in elsewhere.output
