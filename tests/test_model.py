"""The two-tower model: what is trainable, what is exchanged, PEFT-format checkpoints, training."""

import random

import pytest
import torch
from peft import PeftModel

from common.model import (HEAD_PREFIXES, ModelError, build_model, load_checkpoint, load_tokenizer,
                          load_trainable_state, save_checkpoint, trainable_state)
from common.run_data import RunData
from common.recommender import Recommender, _example
from common.schema import Review
from common.config import RunConfig

N_ITEMS = len(RunData.load(RunConfig()).catalogue)  # the demo catalogue the tiny configs use


@pytest.mark.parametrize("item_embeddings", [True, False])
def test_when_model_built_then_only_lora_and_projections_are_trainable(tiny_config, item_embeddings):
    tiny_config = tiny_config.replace(item_embeddings=item_embeddings)
    model = build_model(tiny_config, num_items=N_ITEMS)
    state = trainable_state(model)
    assert state, "nothing trainable"
    for name in state:
        assert "lora_" in name or name.startswith(HEAD_PREFIXES), name
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    assert frozen > 10 * sum(t.numel() for t in state.values())


def test_when_top_layers_set_then_lora_only_there(tiny_config):
    names = trainable_state(build_model(tiny_config.replace(lora_top_layers=1), num_items=N_ITEMS))
    lora = [n for n in names if "lora_" in n]
    assert lora and all(".layer.1." in n for n in lora)


def test_when_same_seed_then_same_initial_state(tiny_config):
    a, b = trainable_state(build_model(tiny_config, num_items=N_ITEMS)), trainable_state(build_model(tiny_config, num_items=N_ITEMS))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_when_update_has_wrong_shape_then_refused(tiny_config):
    model = build_model(tiny_config, num_items=N_ITEMS)
    state = trainable_state(model)
    name = next(iter(state))
    state[name] = torch.zeros(3, 3)
    with pytest.raises(ModelError, match="has shape"):
        load_trainable_state(model, state)


def test_when_update_is_not_finite_then_refused_and_model_unchanged(tiny_config):
    model = build_model(tiny_config, num_items=N_ITEMS)
    before = trainable_state(model)
    state = {k: v + 1.0 for k, v in before.items()}
    name = list(state)[-1]  # the last tensor applied: every other one would be copied first
    state[name].view(-1)[0] = float("nan")
    with pytest.raises(ModelError, match="NaN"):
        load_trainable_state(model, state)
    after = trainable_state(model)
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_when_update_has_extra_tensor_then_refused(tiny_config):
    model = build_model(tiny_config, num_items=N_ITEMS)
    state = trainable_state(model) | {"encoder.embeddings.word_embeddings.weight": torch.zeros(1)}
    with pytest.raises(ModelError, match="unexpected"):
        load_trainable_state(model, state)


def test_when_checkpoint_saved_then_peft_reads_it_and_scores_match(tiny_config, tmp_path):
    model = build_model(tiny_config, num_items=N_ITEMS)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.01 * torch.randn_like(param))
    save_checkpoint(model, tmp_path / "ckpt", meta={"round": 1})
    assert (tmp_path / "ckpt" / "adapter_config.json").is_file()
    assert (tmp_path / "ckpt" / "adapter_model.safetensors").is_file()
    from transformers import AutoModel
    peft = PeftModel.from_pretrained(AutoModel.from_pretrained(tiny_config.model_path), tmp_path / "ckpt")
    assert any("lora_A" in n for n, _ in peft.named_parameters())
    restored = load_checkpoint(tmp_path / "ckpt", tiny_config, num_items=N_ITEMS)
    tok = load_tokenizer(tiny_config)
    batch = tok(["a red guitar strap", "drum sticks"], return_tensors="pt", padding=True)
    model.eval(), restored.eval()
    with torch.no_grad():
        a = model.encode_users(batch["input_ids"], batch["attention_mask"])
        b = restored.encode_users(batch["input_ids"], batch["attention_mask"])
    assert torch.allclose(a, b, atol=1e-6)


def test_when_checkpoint_folder_is_wrong_then_clear_error(tiny_config, tmp_path):
    with pytest.raises(ModelError, match="no adapter_config.json"):
        load_checkpoint(tmp_path, tiny_config)


def test_when_model_path_has_no_checkpoint_then_clear_error(tiny_config, tmp_path):
    with pytest.raises(ModelError, match="holds no config.json"):
        build_model(tiny_config.replace(model_path=str(tmp_path)), num_items=N_ITEMS)


def test_when_trained_then_adapter_changes_and_loss_falls(tiny_config):
    data = RunData.load(tiny_config)
    recommender = Recommender(tiny_config, data.catalogue)
    users = data.split.users()[:48]
    before = recommender.state()
    rng = random.Random(0)
    first = recommender.train(users, data.split, rng=rng, steps=6)
    later = recommender.train(users, data.split, rng=rng, steps=24)
    after = recommender.state()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert any("lora_B" in k for k in changed) and any(k.startswith("user_proj") for k in changed)
    assert later.mean_loss < first.mean_loss
    assert later.examples_seen == 24 * tiny_config.batch_size


def test_when_item_embeddings_on_then_they_train_and_travel(tiny_config):
    cfg = tiny_config
    data = RunData.load(cfg)
    recommender = Recommender(cfg, data.catalogue)
    assert recommender.state()["item_embedding.weight"].shape == (len(data.catalogue), cfg.embed_dim)
    recommender.train(data.split.users()[:32], data.split, rng=random.Random(0), steps=3)
    assert recommender.state()["item_embedding.weight"].abs().sum() > 0
    with pytest.raises(ModelError, match="num_items"):
        build_model(cfg)


def _reviews(n):
    return [Review(user_id="u", item_id=f"i{t}", rating=5.0, timestamp=t, summary="", text="")
            for t in range(n)]


@pytest.mark.parametrize("seed", range(20))
def test_when_next_item_targets_then_profile_is_strictly_earlier(seed):
    reviews = _reviews(5)
    profile, target = _example(reviews, "next-item", random.Random(seed))
    position = [r.item_id for r in reviews].index(target)
    assert position >= 1 and profile == reviews[:position]


@pytest.mark.parametrize("seed", range(20))
def test_when_leave_one_out_targets_then_profile_is_all_others(seed):
    reviews = _reviews(4)
    profile, target = _example(reviews, "leave-one-out", random.Random(seed))
    assert target not in [r.item_id for r in profile] and len(profile) == 3


def test_when_evaluated_then_metrics_are_in_range(tiny_config):
    data = RunData.load(tiny_config)
    recommender = Recommender(tiny_config, data.catalogue)
    metrics = recommender.evaluate(data.split.users()[:40], data.split, target="test")
    assert metrics["num-users"] == 40
    assert 0 <= metrics["ndcg@10"] <= metrics["hr@10"] <= 1


def test_when_history_embeddings_on_then_profile_items_move_the_user_vector(tiny_config):
    data = RunData.load(tiny_config)
    with_history = Recommender(tiny_config.replace(history_embeddings=True), data.catalogue)
    text_only = Recommender(tiny_config, data.catalogue)
    with torch.no_grad():
        with_history.model.item_embedding.weight.normal_()
    text_only.load_state(with_history.state())
    profiles = [data.split.train[u] for u in data.split.users()[:3]] + [[]]
    a, b = with_history._encode(profiles), text_only._encode(profiles)
    assert torch.isfinite(a).all()
    assert not torch.allclose(a[:3], b[:3])
    assert torch.allclose(a[3], b[3], atol=1e-6)  # an empty profile has no items to add


def test_when_history_embeddings_without_item_embeddings_then_config_error(tiny_config):
    from common.config import ConfigError

    with pytest.raises(ConfigError, match="history-embeddings"):
        tiny_config.replace(item_embeddings=False, history_embeddings=True)


def test_when_ffa_lora_then_only_b_trains_and_travels(tiny_config):
    cfg = tiny_config.replace(ffa_lora=True, local_steps=2)
    data = RunData.load(cfg)
    recommender = Recommender(cfg, data.catalogue)
    a_before = {n: p.detach().clone() for n, p in recommender.model.named_parameters() if "lora_A" in n}
    state = recommender.state()
    assert a_before and not any("lora_A" in k for k in state) and any("lora_B" in k for k in state)
    full = Recommender(cfg.replace(ffa_lora=False), data.catalogue).state()
    lora = lambda s: sum(v.numel() for k, v in s.items() if "lora_" in k)  # noqa: E731
    assert lora(state) * 2 == lora(full)  # B and A have the same size here: half the LoRA upload
    recommender.train(data.split.users()[:40], data.split, rng=random.Random(0))
    after = dict(recommender.model.named_parameters())
    assert all(torch.equal(a_before[n], after[n]) for n in a_before)  # A never moves
    assert any(not torch.equal(state[k], recommender.state()[k]) for k in state if "lora_B" in k)
    # Every party builds the same A from the seed, so averaging B alone is exact.
    again = Recommender(cfg, data.catalogue)
    assert all(torch.equal(a_before[n], dict(again.model.named_parameters())[n]) for n in a_before)


def test_when_untrained_then_model_ranks_by_base_text_similarity(tiny_config):
    """Zero-shot start: a profile reading exactly like one item's text ranks that item first."""
    texts = ["acoustic guitar strings phosphor bronze", "drum sticks hickory 5a",
             "usb audio interface two inputs", "violin rosin dark", "capo for electric guitar"]
    model = build_model(tiny_config, num_items=len(texts)).eval()
    assert torch.equal(model.user_proj.weight, model.item_proj.weight)
    tokenizer = load_tokenizer(tiny_config)
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        items = model.encode_items(model.pool_items(batch["input_ids"], batch["attention_mask"]))
        users = model.encode_users(batch["input_ids"], batch["attention_mask"])
        scores = model.scores(users, items)
    assert torch.equal(scores.argmax(1), torch.arange(len(texts)))
    assert torch.allclose(scores.diagonal() * model.temperature, torch.ones(len(texts)), atol=1e-4)



def _upload_bytes(state: dict) -> int:
    return sum(t.numel() * t.element_size() for t in state.values())


def test_when_catalogue_is_wider_than_the_table_then_items_share_hashed_rows_and_upload_stops_growing(tiny_config):
    cfg = tiny_config.replace(item_table_width=20)
    small, large = build_model(cfg, num_items=50), build_model(cfg, num_items=5000)
    assert _upload_bytes(trainable_state(small)) == _upload_bytes(trainable_state(large))
    assert trainable_state(large)["item_embedding.weight"].shape == (20, cfg.embed_dim)
    assert trainable_state(large)["item_bias.weight"].shape == (20,)
    assert not any("rows" in name for name in trainable_state(large))  # derived, never sent
    rows = large.item_embedding.rows
    assert rows.shape == (2, 5000) and int(rows.max()) < 20 and torch.equal(rows, build_model(cfg, num_items=5000).item_embedding.rows)
    assert len({(int(a), int(b)) for a, b in rows.T}) > 150  # two hashes: 400 row pairs, few items share both
    assert large.item_embedding.per_item().shape == (5000, cfg.embed_dim)
    # Up to the width every item keeps its own row (nothing changes on small catalogues) ...
    assert trainable_state(build_model(cfg, num_items=20))["item_embedding.weight"].shape == (20, cfg.embed_dim)
    # ... and under distributed DP the tables never travel, so they stay exact.
    exact = build_model(cfg.replace(dp="distributed"), num_items=5000)
    assert exact.item_bias.weight.shape == (5000,) and exact.item_bias.rows is None


def test_when_table_is_hashed_then_per_example_gradients_match_autograd():
    from common.model import ItemBias, ItemTable

    for layer, shape in ((ItemTable(40, 3, width=7), (2, 40, 3)), (ItemBias(40, width=7), (2, 40))):
        with torch.no_grad():
            layer.weight.normal_()
        backprops = torch.randn(shape)
        expected = []
        for example in backprops:
            layer.zero_grad()
            (layer(torch.zeros(shape[1:])) * example).sum().backward()
            expected.append(layer.weight.grad.clone())
        assert torch.allclose(layer.per_example_grad(backprops), torch.stack(expected), atol=1e-5)


def test_when_tables_are_hashed_then_they_train_rank_and_round_trip_a_checkpoint(tiny_config, tmp_path):
    cfg = tiny_config.replace(item_table_width=N_ITEMS // 3)
    data = RunData.load(cfg)
    recommender = Recommender(cfg, data.catalogue)
    recommender.train(data.split.users()[:32], data.split, rng=random.Random(0), steps=3)
    state = recommender.state()
    assert state["item_embedding.weight"].shape[0] == N_ITEMS // 3 and state["item_bias.weight"].abs().sum() > 0
    users = data.eval_users(cfg, "valid")[:10]
    scores = recommender.scores(users, data.split)
    assert scores.shape == (10, N_ITEMS)
    save_checkpoint(recommender.model, tmp_path / "ckpt", meta={})
    restored = Recommender(cfg, data.catalogue)
    restored.load_checkpoint(tmp_path / "ckpt")
    assert torch.allclose(torch.as_tensor(restored.scores(users, data.split)), torch.as_tensor(scores), atol=1e-5)


def test_when_many_models_are_built_then_they_share_one_frozen_base_and_training_one_leaves_the_others(tiny_config):
    """A worker running many clients reads the base weights once: every model shares them, and
    one client's training (adapters only) changes nothing another client's model computes."""
    data = RunData.load(tiny_config)
    first, second = (Recommender(tiny_config, data.catalogue) for _ in range(2))
    bases = [dict(r.model.encoder.get_base_model().named_parameters()) for r in (first, second)]
    shared = [n for n in bases[0] if "lora_" not in n]
    assert shared and all(bases[0][n] is bases[1][n] and not bases[0][n].requires_grad for n in shared)
    assert first.model.encoder is not second.model.encoder  # each has its own modules (and adapter)
    users = data.split.users()[:16]
    before = second.scores(users, data.split)
    frozen = {n: bases[0][n].detach().clone() for n in shared}
    first.train(users, data.split, rng=random.Random(0), steps=4)
    assert all(torch.equal(bases[0][n], frozen[n]) for n in shared)
    assert (second.scores(users, data.split) == before).all()
