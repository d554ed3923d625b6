"""Review-text augmentation (common/augment.py): each option changes only what it should."""

from __future__ import annotations

import random

import pytest
import torch

from common.augment import Augmenter, EmbeddingNeighbours, crop, edit, substitute
from common.config import ConfigError, RunConfig
from common.recommender import Recommender
from common.run_data import RunData
from common.schema import Review

TEXT = "The strings sound bright. They stay in tune. Shipping was slow. I would buy them again."


def review(user: str, item: str, summary: str, text: str = TEXT) -> Review:
    return Review(user_id=user, item_id=item, rating=4.0, timestamp=1, summary=summary, text=text)


@pytest.mark.parametrize("seed", range(20))
def test_when_cropped_then_a_contiguous_run_of_sentences_remains(seed):
    out = crop(TEXT, random.Random(seed))
    sentences = TEXT.split(". ")
    assert out and out in TEXT
    assert out.split(". ")[0].rstrip(".") in " ".join(sentences)


@pytest.mark.parametrize("seed", range(20))
def test_when_one_sentence_is_cropped_then_at_least_half_its_words_remain_in_order(seed):
    sentence = "great bright strings for an old acoustic guitar"
    out = crop(sentence, random.Random(seed))
    assert out in sentence and len(out.split()) >= 4


@pytest.mark.parametrize("seed", range(20))
def test_when_edited_then_only_original_words_remain_and_never_none(seed):
    words = TEXT.split()
    out = edit(TEXT, 0.3, random.Random(seed)).split()
    assert 1 <= len(out) <= len(words)
    assert all(out.count(w) <= words.count(w) for w in out)


def test_when_edit_rate_is_high_then_one_word_is_kept():
    assert len(edit("a b c d", 0.999, random.Random(0)).split()) == 1


def _neighbours() -> EmbeddingNeighbours:
    vocab = {"[CLS]": 0, "guitar": 1, "guitars": 2, "drum": 3, "##ing": 4, "bass": 5}
    embeddings = torch.tensor([[0.0, 0, 1], [1, 0, 0], [0.99, 0.1, 0], [0, 1, 0], [1, 0, 0], [0.7, 0.7, 0]])
    return EmbeddingNeighbours(vocab, embeddings)


def test_when_neighbours_asked_then_closest_whole_words_come_first():
    neighbours = _neighbours()
    assert neighbours("Guitar")[:2] == ("guitars", "bass")  # never itself, never a '##' piece
    assert neighbours("zither") == () and neighbours("##ing") == ()


def test_when_every_word_is_substituted_then_known_words_become_neighbours_and_others_stay():
    out = substitute("my guitar, and zither", 0.999, _neighbours(), random.Random(0)).split()
    assert out[0] == "my" and out[2] == "and" and out[3] == "zither"
    assert out[1].rstrip(",") in _neighbours()("guitar") and out[1].endswith(",")


def test_when_mixed_then_reviews_come_only_from_other_users_of_the_batch():
    profiles = [[review("a", f"a{i}", "mine") for i in range(30)], [review("b", f"b{i}", "theirs") for i in range(30)]]
    out = Augmenter(("mix",), 0.5).profiles(profiles, random.Random(0))
    assert {r.user_id for r in out[0]} == {"a", "b"} and {r.user_id for r in out[1]} == {"a", "b"}
    assert [len(p) for p in out] == [30, 30]
    assert all(r.user_id == "a" for r in profiles[0])  # the inputs are not changed


def test_when_augmented_then_items_stars_and_titles_stay():
    profiles = [[review("a", "x", "Great strings. Bright and clear.")]]
    out = Augmenter(("crop", "edit"), 0.9).profiles(profiles, random.Random(1))[0][0]
    assert (out.item_id, out.rating, out.user_id) == ("x", 4.0, "a")
    assert out.summary != "Great strings. Bright and clear." or out.text != TEXT


def test_when_augmentation_is_unknown_or_mixes_under_local_dp_then_config_error():
    with pytest.raises(ConfigError, match="`augment`.*crop, edit, substitute, mix"):
        RunConfig(augment="crop,backtranslate")
    with pytest.raises(ConfigError, match="`augment` should not include 'mix' with `dp` = 'local'"):
        RunConfig(dp="local", augment="mix")
    with pytest.raises(ConfigError, match="`augment-rate` should be in"):
        RunConfig(augment="edit", augment_rate=1.5)
    assert RunConfig(augment="edit, crop").augmentations == ("crop", "edit")


def test_when_training_with_augmentation_then_the_model_trains_and_neighbours_come_from_the_base(tiny_config):
    cfg = tiny_config.replace(augment="crop,edit,substitute,mix", augment_rate=0.5)
    data = RunData.load(cfg)
    recommender = Recommender(cfg, data.catalogue)
    assert recommender.augmenter is not None and recommender.augmenter.neighbours is not None
    vocab = recommender.tokenizer.get_vocab()
    word = next(w for w in ("guitar", "good", "great", "the") if w in vocab)
    assert all(n in vocab for n in recommender.augmenter.neighbours(word))
    before = recommender.state()
    result = recommender.train(data.split.users()[:24], data.split, rng=random.Random(0), steps=3)
    assert result.steps == 3 and all(torch.isfinite(torch.tensor(result.mean_loss)).reshape(-1))
    assert any(not torch.equal(before[k], v) for k, v in recommender.state().items())
