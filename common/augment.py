"""Review-text augmentation for training (``augment``, ``augment-rate``).

Each training example's profile reviews can be varied before the user tower reads them, so that
the tower sees many versions of few users' words:

* ``crop``: a review's text keeps a random contiguous run of its sentences (at least one; of its
  words, at least half, when it is one sentence), with probability ``augment-rate`` per review;
* ``edit``: random deletion and swap (EDA, Wei and Zou 2019): each word is dropped with
  probability ``augment-rate`` (one always stays), then about ``augment-rate`` x words pairs swap;
* ``substitute``: each word is replaced, with probability ``augment-rate``, by one of its nearest
  neighbours among whole-word tokens of the base model's input embeddings (cosine);
* ``mix``: each profile review is replaced, with probability ``augment-rate``, by a review of
  another user in the same batch (one client's users). It lets one user's words into another
  user's example, so it is refused under ``dp`` = 'local' (user-level DP-SGD).

Back-translation would need a translation model; none is available offline here, so it is not an
option. Only review words (summary and body) change; item titles, stars and items stay, and the
target is never augmented. Augmentation draws from the training ``random.Random``: it is not a
privacy mechanism.
"""

from __future__ import annotations

import dataclasses
import random
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from common.schema import Review

if TYPE_CHECKING:  # torch is imported where neighbours are built: the config imports this module
    import torch

AUGMENTATIONS = ("crop", "edit", "substitute", "mix")
NEIGHBOURS = 5  # candidates per word for ``substitute``
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"^[a-z]{3,}$")


def crop(text: str, rng: random.Random) -> str:
    """A random contiguous run of ``text``'s sentences (at least one), or of a single sentence's
    words (at least half)."""
    parts = [s for s in _SENTENCE.split(text.strip()) if s]
    shortest = 1
    if len(parts) < 2:
        parts = text.split()
        shortest = (len(parts) + 1) // 2
    if len(parts) < 2:
        return text
    size = rng.randint(shortest, len(parts))
    start = rng.randint(0, len(parts) - size)
    return " ".join(parts[start : start + size])


def edit(text: str, rate: float, rng: random.Random) -> str:
    """Random deletion (each word with probability ``rate``, one always kept) and swaps."""
    words = text.split()
    if len(words) < 2:
        return text
    kept = [w for w in words if rng.random() >= rate] or [rng.choice(words)]
    for _ in range(round(rate * len(kept))):
        i, j = rng.randrange(len(kept)), rng.randrange(len(kept))
        kept[i], kept[j] = kept[j], kept[i]
    return " ".join(kept)


class EmbeddingNeighbours:
    """Nearest whole-word tokens of a word in a BERT model's input embedding space (cached)."""

    def __init__(self, vocab: dict[str, int], embeddings: torch.Tensor) -> None:
        import torch

        self._vocab = vocab
        words = sorted((i, w) for w, i in vocab.items() if _WORD.match(w))
        self._ids = torch.tensor([i for i, _ in words])
        self._words = [w for _, w in words]
        self._all = torch.nn.functional.normalize(embeddings.detach().float(), dim=-1)
        self._unit = self._all[self._ids]  # the whole-word candidates
        self._cache: dict[str, tuple[str, ...]] = {}

    def __call__(self, word: str) -> tuple[str, ...]:
        """Up to :data:`NEIGHBOURS` other words closest to ``word`` (lower case); () if it is not
        a whole-word token of the vocabulary."""
        key = word.lower()
        if key not in self._cache:
            index = self._vocab.get(key)
            if index is None or not _WORD.match(key):
                self._cache[key] = ()
            else:
                similarity = self._unit @ self._all[index]
                best = similarity.topk(min(NEIGHBOURS + 1, len(similarity))).indices.tolist()
                self._cache[key] = tuple(self._words[i] for i in best if self._words[i] != key)[:NEIGHBOURS]
        return self._cache[key]


def substitute(text: str, rate: float, neighbours: EmbeddingNeighbours, rng: random.Random) -> str:
    """Each word replaced with probability ``rate`` by one of its embedding neighbours."""
    out = []
    for word in text.split():
        core = word.strip(".,!?;:\"'()")
        options = neighbours(core) if core and rng.random() < rate else ()
        out.append(word.replace(core, rng.choice(options)) if options else word)
    return " ".join(out)


@dataclasses.dataclass(frozen=True)
class Augmenter:
    """Applies the configured options, in the order of :data:`AUGMENTATIONS`, to profiles."""

    options: tuple[str, ...]
    rate: float
    neighbours: EmbeddingNeighbours | None = None

    def __post_init__(self) -> None:
        unknown = sorted(set(self.options) - set(AUGMENTATIONS))
        if unknown:
            raise ValueError(f"unknown augmentation {unknown[0]!r}; choose from {', '.join(AUGMENTATIONS)}")
        if "substitute" in self.options and self.neighbours is None:
            raise ValueError("`substitute` augmentation needs the base model's embedding neighbours")

    def profiles(self, profiles: Sequence[list[Review]], rng: random.Random) -> list[list[Review]]:
        """New profile lists (the inputs are not changed)."""
        out = [list(p) for p in profiles]
        if "mix" in self.options and len(out) > 1:
            originals = [list(p) for p in profiles]
            for row, profile in enumerate(out):
                others = [r for other, p in enumerate(originals) if other != row for r in p]
                for i in range(len(profile)):
                    if others and rng.random() < self.rate:
                        profile[i] = rng.choice(others)
        return [[self._review(r, rng) for r in p] for p in out]

    def _review(self, review: Review, rng: random.Random) -> Review:
        summary, text = review.summary, review.text
        if "crop" in self.options and rng.random() < self.rate:
            summary, text = crop(summary, rng), crop(text, rng)
        if "edit" in self.options:
            summary, text = edit(summary, self.rate, rng), edit(text, self.rate, rng)
        if "substitute" in self.options and self.neighbours is not None:  # checked when built
            summary = substitute(summary, self.rate, self.neighbours, rng)
            text = substitute(text, self.rate, self.neighbours, rng)
        if (summary, text) == (review.summary, review.text):
            return review
        return dataclasses.replace(review, summary=summary, text=text)


def parse(value: str) -> tuple[str, ...]:
    """'crop,edit' -> ('crop', 'edit'); '' or 'none' -> ()."""
    names = tuple(n.strip() for n in value.split(",") if n.strip() and n.strip() != "none")
    return tuple(n for n in AUGMENTATIONS if n in names) + tuple(n for n in names if n not in AUGMENTATIONS)
