"""Recall and precision of the scrubber on a labelled set (``tests/data/pii/*.jsonl``).

Each line: ``{"id", "text", "entities": [{"type", "text"}], "own_names": [...]}``; every
occurrence of an entity's text is a gold span. A gold span counts as *removed* when the
scrubber's spans cover all of its letters and digits (a partly removed e-mail still leaks),
whatever type the scrubber gave it. A found span counts as *correct* when it overlaps a gold
span. Recall is per gold type, precision per found type (own names count as PERSON).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from client.anonymiser import entities as E
from client.anonymiser.scrubber import PiiScrubber


@dataclass(frozen=True)
class Labelled:
    """One labelled sentence."""

    id: str
    text: str
    spans: tuple[tuple[str, int, int], ...]  # (type, start, end)
    own_names: tuple[str, ...] = ()


@dataclass
class Score:
    """Counts behind recall and precision, overall and per type."""

    gold: Counter = field(default_factory=Counter)
    removed: Counter = field(default_factory=Counter)
    found: Counter = field(default_factory=Counter)
    correct: Counter = field(default_factory=Counter)
    negatives: int = 0
    negatives_touched: int = 0
    missed: list[str] = field(default_factory=list)  # "id: type" (no strings: safe to log)
    spurious: list[str] = field(default_factory=list)

    def recall(self, entity: str | None = None) -> float:
        """Share of gold spans removed (of one type, or all)."""
        g = self.gold[entity] if entity else sum(self.gold.values())
        r = self.removed[entity] if entity else sum(self.removed.values())
        return r / g if g else float("nan")

    def precision(self, entity: str | None = None) -> float:
        """Share of found spans that overlap a gold span (of one found type, or all)."""
        f = self.found[entity] if entity else sum(self.found.values())
        c = self.correct[entity] if entity else sum(self.correct.values())
        return c / f if f else float("nan")


def load_labelled(path: str | Path) -> list[Labelled]:
    """Read a labelled set; every occurrence of each entity text becomes a gold span."""
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        spans = []
        for ent in row["entities"]:
            start = row["text"].find(ent["text"])
            if start < 0:
                raise ValueError(f"{path}: {row['id']}: entity text is not in the sentence")
            while start >= 0:
                spans.append((ent["type"], start, start + len(ent["text"])))
                start = row["text"].find(ent["text"], start + 1)
        rows.append(Labelled(row["id"], row["text"], tuple(spans), tuple(row.get("own_names", ()))))
    return rows


def score(scrubber: PiiScrubber, rows: Iterable[Labelled]) -> Score:
    """Run the scrubber over ``rows`` and count removed, found and correct spans."""
    result = Score()
    for row in rows:
        found = scrubber.analyze(row.text, own_names=row.own_names)
        covered: set[int] = set()
        for r in found:
            covered.update(range(r.start, r.end))
        for entity, start, end in row.spans:
            result.gold[entity] += 1
            if all(i in covered for i in range(start, end) if row.text[i].isalnum()):
                result.removed[entity] += 1
            else:
                result.missed.append(f"{row.id}: {entity}")
        for r in found:
            kind = E.PERSON if r.entity_type == E.OWN_NAME else r.entity_type
            result.found[kind] += 1
            if any(r.start < end and start < r.end for _, start, end in row.spans):
                result.correct[kind] += 1
            else:
                result.spurious.append(f"{row.id}: {kind}")
        if not row.spans:
            result.negatives += 1
            result.negatives_touched += bool(found)
    return result
