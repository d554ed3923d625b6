"""Pooled catalogue vectors kept on disk (common/item_cache.py): a fresh process reads them instead of
running the base model over the catalogue; a damaged file is recomputed; changed inputs miss."""

from __future__ import annotations

import os

import pytest
import torch

import common.recommender as recommenders
from common.item_cache import CACHE_DIR_ENV, cache_key
from common.recommender import Recommender
from common.run_data import load_catalogue


def _fresh(cfg, catalogue, monkeypatch, *, pool=None) -> Recommender:
    """A Recommender as a new process builds it (no in-memory vectors); ``pool`` replaces the pooling."""
    monkeypatch.setattr(recommenders, "_ITEM_CACHE", {})
    if pool is not None:
        monkeypatch.setattr(recommenders, "pool_catalogue", pool)
    return Recommender(cfg, catalogue)


def _never(*args, **kwargs):
    raise AssertionError("the catalogue was pooled again")


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache" / "item-vectors"


def test_when_a_new_process_builds_the_model_then_it_reads_the_pooled_items_from_disk(tiny_config, cache,
                                                                                         monkeypatch):
    catalogue = load_catalogue(tiny_config)
    first = _fresh(tiny_config, catalogue, monkeypatch)
    [stored] = list(cache.iterdir())
    second = _fresh(tiny_config, catalogue, monkeypatch, pool=_never)
    assert torch.equal(first.items.pooled, second.items.pooled) and second.items.ids == catalogue.ids
    assert stored.stat().st_size > first.items.pooled.numel() * 4


def test_when_the_cached_file_is_damaged_then_it_is_recomputed_and_replaced(tiny_config, cache, monkeypatch):
    catalogue = load_catalogue(tiny_config)
    reference = _fresh(tiny_config, catalogue, monkeypatch).items.pooled
    [stored] = list(cache.iterdir())
    stored.write_bytes(stored.read_bytes()[:100])
    assert torch.equal(_fresh(tiny_config, catalogue, monkeypatch).items.pooled, reference)
    assert torch.equal(_fresh(tiny_config, catalogue, monkeypatch, pool=_never).items.pooled, reference)


def test_when_an_input_changes_then_the_key_changes(tiny_config, tmp_path):
    catalogue = load_catalogue(tiny_config)
    ids, texts = catalogue.ids, catalogue.texts()
    key = cache_key(tiny_config.model_dir, 16, ids, texts, "cpu")
    assert key == cache_key(tiny_config.model_dir, 16, ids, texts, "cpu")
    assert key != cache_key(tiny_config.model_dir, 17, ids, texts, "cpu")
    assert key != cache_key(tiny_config.model_dir, 16, ids, (texts[0] + " new",) + tuple(texts[1:]), "cpu")
    assert key != cache_key(tiny_config.model_dir, 16, tuple(reversed(ids)), tuple(reversed(texts)), "cpu")
    weights = next(p for p in tiny_config.model_dir.iterdir() if p.suffix == ".safetensors")
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # a new checkpoint
    assert key != cache_key(tiny_config.model_dir, 16, ids, texts, "cpu")


def test_when_the_cache_cannot_be_written_then_the_model_still_builds(tiny_config, tmp_path, monkeypatch):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    monkeypatch.setenv(CACHE_DIR_ENV, str(blocked))
    recommender = _fresh(tiny_config, load_catalogue(tiny_config), monkeypatch)
    assert recommender.items.pooled.shape[0] == len(recommender.catalogue)
