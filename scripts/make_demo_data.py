"""Generate PrivRec's small synthetic demo data set (a fictional music shop) deterministically.

Writes ``reviews.jsonl`` (normalised review schema; plain so that Flower app bundles carry
it) and ``items.jsonl``; the bytes are reproducible. Users have preferred categories and a price band, and
their review texts say so, so a text model can learn preferences. About a quarter of the
review texts carry planted, fake PII of every kind the anonymiser handles.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
from pathlib import Path
from typing import Callable

logger = logging.getLogger("make_demo_data")

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "common" / "demo_data"
PII_SHARE = 0.25
MATCH_SHARE = 0.8
HARD_NEGATIVE_SHARE = 0.1
MIN_WORDS, MAX_WORDS = 15, 60
START_TIME = 1_546_300_800  # 2019-01-01 UTC
DAY = 86_400

# name -> (title nouns, attribute words, what buyers are into, budget price range, premium price range)
CATEGORIES: dict[str, tuple[list[str], list[str], list[str], tuple[float, float], tuple[float, float]]] = {
    "Guitar Strings": (["String Set", "Guitar Strings"], ["bright", "warm", "nickel-wound", "phosphor bronze"],
                       ["acoustic guitar", "electric guitar"], (4, 9.5), (14, 35)),
    "Drum Sticks": (["Drum Sticks", "Stick Pair"], ["hickory", "maple", "nylon-tip", "balanced"],
                    ["drums", "jazz drumming"], (5, 9.5), (15, 30)),
    "Microphones": (["Microphone", "Vocal Mic"], ["cardioid", "condenser", "dynamic", "low-noise"],
                    ["vocals", "podcasts"], (15, 39), (90, 400)),
    "Guitar Pedals": (["Overdrive Pedal", "Delay Pedal"], ["crunchy", "true-bypass", "fuzzy", "analog"],
                      ["electric guitar", "blues guitar"], (20, 39), (80, 300)),
    "Instrument Cables": (["Instrument Cable", "Patch Cable"], ["shielded", "braided", "low-noise", "flexible"],
                          ["bass guitar", "electric guitar"], (5, 9.9), (20, 60)),
    "Ukuleles": (["Ukulele", "Concert Uke"], ["mahogany", "soprano", "bright", "lightweight"],
                 ["ukulele", "folk songs"], (25, 39), (120, 400)),
    "Studio Headphones": (["Headphones", "Monitor Headphones"], ["closed-back", "flat-response", "comfy", "detailed"],
                          ["mixing", "home recording"], (15, 39), (90, 350)),
    "Violin Rosin": (["Rosin Cake", "Violin Rosin"], ["dark", "amber", "sticky", "dust-free"],
                     ["violin", "cello"], (3, 8), (12, 30)),
    "Keyboard Stands": (["Keyboard Stand", "X-Stand"], ["sturdy", "foldable", "wobbly-free", "adjustable"],
                        ["keyboard", "synthesizer"], (15, 35), (60, 150)),
    "Harmonicas": (["Harmonica", "Blues Harp"], ["diatonic", "chromatic", "airtight", "bendy"],
                   ["harmonica", "country blues"], (5, 9.5), (40, 120)),
}
BRANDS = ["Quillstone", "Brackenly", "Tovaro", "Marrowind", "Zanvora", "Hollowpine", "Corvessa", "Lumebrook"]
FIRST_NAMES = ["Alex", "Maria", "Tom", "Priya", "Jonas", "Aiko", "Sam", "Lena", "Omar", "Grace",
               "Mateo", "Nina", "Ravi", "Chloe", "Felix", "Hana", "Leo", "Zara", "Ivan", "Ruth"]
LAST_NAMES = ["Lopez", "Novak", "Okafor", "Lindqvist", "Tanaka", "Brennan", "Kowalski", "Haddad",
              "Moreau", "Petrov", "Sato", "Quinn", "Varga", "Eriksen", "Mendes", "Fischer"]
CITIES = ["Denver", "Portland", "Austin", "Chicago", "Boston", "Seattle", "Nashville", "Toronto"]
CONTEXTS = ["at home", "in a small band", "at church", "in a school orchestra", "at open mic nights"]
HARD_NEGATIVES = ["I drank a Dr Pepper while setting it up.", "After the firmware 2.0.1.4 update it works fine.",
                  "I paid $19.99 for it on sale.", "It sounds close to my old SM-58."]
FILLERS = ["Shipping was quick.", "The packaging was fine.", "Build quality seems solid."]
SENTIMENT = {5: ["Highly recommended.", "I love it."], 4: ["Pretty happy overall.", "Good purchase."],
             3: ["It is okay, nothing special."], 2: ["Somewhat disappointed."], 1: ["Would not buy again."]}
SUMMARY = {5: ["Love it", "Excellent {c}"], 4: ["Solid choice", "Good {c}"], 3: ["It's okay"],
           2: ["Not great"], 1: ["Disappointed"]}
PRICE_TALK = {
    ("budget", "budget"): ["Great value for the money, cheap and cheerful.", "At this low price I cannot complain."],
    ("budget", "premium"): ["Way too expensive for what it is.", "Overpriced in my opinion, I like cheap gear."],
    ("premium", "premium"): ["Pricey, but worth every penny for the quality.", "Expensive, but pro quality pays off."],
    ("premium", "budget"): ["Feels cheap; I prefer spending more for pro quality.", "Budget gear, and it shows."],
}


def _pii_sentence(kind: str, rng: random.Random, own_first: str) -> str:
    """One sentence with fake PII of the given kind."""
    first = rng.choice([name for name in FIRST_NAMES if name != own_first])
    last, n = rng.choice(LAST_NAMES), rng.randint(1, 99)
    area, line = rng.choice([212, 312, 415, 617, 206]), f"01{rng.randint(0, 99):02d}"
    makers: dict[str, Callable[[], str]] = {
        "PERSON": lambda: rng.choice([f"My teacher {first} {last} recommended it.",
                                      f"My bandmate {first} {last} owns the same one."]),
        "OWN_NAME": lambda: rng.choice([f"- signed, {own_first}", f"Cheers, {own_first}"]),
        "LOCATION": lambda: f"I picked it up at a store in {rng.choice(CITIES)}.",
        "EMAIL": lambda: f"Email me at {first.lower()}.{last.lower()}{n}@example.com with questions.",
        "PHONE": lambda: "Call me at " + rng.choice([f"({area}) 555-{line}", f"+1 {area} 555 {line}",
                                                     f"{area}-555-{line}"]) + " about it.",
        "URL": lambda: rng.choice([f"More photos at https://www.example.com/gear/{n} if curious.",
                                   f"I posted a demo on http://example.org/demos/{n} last week."]),
        "CREDIT_CARD": lambda: "I paid with my card " + rng.choice(
            ["4111 1111 1111 1111", "5555 5555 5555 4444", "4012 8888 8888 1881"]) + " without issues.",
        "IBAN": lambda: "The refund went to my IBAN " + rng.choice(
            ["GB82 WEST 1234 5698 7654 32", "DE89 3704 0044 0532 0130 00"]) + ".",
        "IP_ADDRESS": lambda: f"The app found my interface at {rng.choice(['192.168.1.23', '10.0.0.5', '203.0.113.7'])}.",
        "US_SSN": lambda: f"The warranty form asked for my SSN {rng.choice(['078-05-1120', '219-09-9999'])}, weird.",
        "STREET_ADDRESS": lambda: f"Send offers to {rng.randint(2, 99)} "
                                  f"{rng.choice(['Elm Street', 'Maple Avenue', 'Oak Lane', 'Birch Road'])}.",
    }
    return makers[kind]()


PII_KINDS = ("PERSON", "OWN_NAME", "LOCATION", "EMAIL", "PHONE", "URL", "CREDIT_CARD", "IBAN",
             "IP_ADDRESS", "US_SSN", "STREET_ADDRESS")


def make_items(rng: random.Random, count: int) -> list[dict]:
    """Items cycling through categories; alternating blocks of budget and premium prices."""
    names = list(CATEGORIES)
    items = []
    for index in range(count):
        category = names[index % len(names)]
        nouns, attributes, _, budget, premium = CATEGORIES[category]
        band = "budget" if (index // len(names)) % 2 == 0 else "premium"
        low, high = budget if band == "budget" else premium
        brand = rng.choice(BRANDS)
        model = f"{rng.choice('KRTVXZ')}-{rng.randint(1, 9) * 100 + rng.choice([0, 10, 50])}"
        title = f"{brand} {rng.choice(attributes).capitalize()} {rng.choice(nouns)} {model}"
        items.append({"item_id": f"D{index + 1:04d}", "title": title, "category": category,
                      "price": round(rng.uniform(low, high), 2), "brand": brand, "_band": band})
    return items


def _review_text(rng: random.Random, item: dict, user: dict, rating: int, pii_kind: str | None) -> str:
    category = item["category"]
    nouns, attributes, plays, _, _ = CATEGORIES[category]
    a1, a2 = rng.sample(attributes, 2)
    play = rng.choice(CATEGORIES[user["prefs"][0]][2])
    sentences = [rng.choice([f"These {category.lower()} are {a1} and {a2}.",
                             f"I bought the {item['brand']} {rng.choice(nouns).lower()} for its {a1} feel."]),
                 f"I am into {play}, mostly {rng.choice(CONTEXTS)}."]
    if category not in user["prefs"]:
        sentences.append(f"I usually stick to {user['prefs'][0].lower()}, so this was a side purchase.")
    sentences += [rng.choice(PRICE_TALK[(user["band"], item["_band"])]), rng.choice(SENTIMENT[rating])]
    if pii_kind and pii_kind != "OWN_NAME":
        sentences.insert(rng.randint(0, len(sentences)), _pii_sentence(pii_kind, rng, user["first"]))
    if rng.random() < HARD_NEGATIVE_SHARE:
        negative = rng.choice(HARD_NEGATIVES)
        if len(" ".join(sentences + [negative]).split()) <= MAX_WORDS - 2:  # room for a signature
            sentences.insert(rng.randint(1, len(sentences)), negative)
    if pii_kind == "OWN_NAME":
        sentences.append(_pii_sentence(pii_kind, rng, user["first"]))
    while len(" ".join(sentences).split()) < MIN_WORDS:
        sentences.insert(-1, rng.choice(FILLERS))
    text = " ".join(sentences)
    if not MIN_WORDS <= len(text.split()) <= MAX_WORDS:
        raise RuntimeError(f"generated a review text of {len(text.split())} words: {text!r}")
    return text


def _rating(rng: random.Random, item: dict, user: dict) -> int:
    if item["category"] not in user["prefs"]:
        return rng.choice([1, 2, 2, 3])
    return rng.choice([4, 5, 5, 5]) if item["_band"] == user["band"] else rng.choice([3, 3, 4])


def _pick_items(rng: random.Random, items: list[dict], user: dict, count: int) -> list[dict]:
    """Chronological picks: the last one always matches the user's preferences, others ~80%."""
    matching = [it for it in items if it["category"] in user["prefs"] and it["_band"] == user["band"]]
    matching_ids = {it["item_id"] for it in matching}
    last = rng.choice(matching)
    used = {last["item_id"]}
    picks = []
    for _ in range(count - 1):
        want_match = rng.random() < MATCH_SHARE
        pool = [it for it in items if it["item_id"] not in used and (it["item_id"] in matching_ids) == want_match]
        pool = pool or [it for it in items if it["item_id"] not in used]
        choice = rng.choice(pool)
        used.add(choice["item_id"])
        picks.append(choice)
    return picks + [last]


def make_reviews(rng: random.Random, items: list[dict], num_users: int) -> list[dict]:
    """Reviews of ``num_users`` synthetic users, grouped by user in time order."""
    reviews, pii_count = [], 0
    for index in range(num_users):
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        user = {"id": f"U{index + 1:04d}", "first": first,
                "name": rng.choice([f"{first} {last}", f"{first} {last[0]}."]),
                "prefs": rng.sample(list(CATEGORIES), rng.choice([1, 2])),
                "band": rng.choice(["budget", "premium"])}
        timestamp = START_TIME + rng.randint(0, 3 * 365) * DAY
        for item in _pick_items(rng, items, user, rng.randint(5, 12)):
            timestamp += rng.randint(1, 45) * DAY + rng.randint(0, DAY - 1)
            rating = _rating(rng, item, user)
            pii_kind = None
            if rng.random() < PII_SHARE:
                pii_kind, pii_count = PII_KINDS[pii_count % len(PII_KINDS)], pii_count + 1
            reviews.append({
                "user_id": user["id"], "item_id": item["item_id"], "rating": float(rating),
                "timestamp": timestamp,
                "summary": rng.choice(SUMMARY[rating]).format(c=item["category"].lower()),
                "review_text": _review_text(rng, item, user, rating, pii_kind),
                "reviewer_name": user["name"],
            })
    return reviews


def _lines(records: list[dict]) -> bytes:
    return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records).encode("utf-8")


def write_demo_data(out: Path, *, seed: int = 0, num_users: int = 300, num_items: int = 200) -> tuple[int, int]:
    """Write reviews.jsonl and items.jsonl into ``out``; return (reviews, items) written."""
    rng = random.Random(seed)
    items = make_items(rng, num_items)
    reviews = make_reviews(rng, items, num_users)
    out.mkdir(parents=True, exist_ok=True)
    # Plain JSON lines (< 1 MB): Flower app bundles (`flwr run .`) carry *.jsonl but never *.gz.
    (out / "reviews.jsonl").write_bytes(_lines(reviews))
    public_items = [{k: v for k, v in item.items() if not k.startswith("_")} for item in items]
    (out / "items.jsonl").write_bytes(_lines(public_items))
    return len(reviews), len(items)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: common/demo_data/)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--users", type=int, default=300, help="number of users (default: 300)")
    parser.add_argument("--items", type=int, default=200, help="number of items, >= 20 (default: 200)")
    args = parser.parse_args(argv)
    if args.users < 1:
        parser.error(f"--users must be >= 1, got {args.users}")
    if args.items < 2 * len(CATEGORIES):
        parser.error(f"--items must be >= {2 * len(CATEGORIES)} (a budget and a premium item per category), "
                     f"got {args.items}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    num_reviews, num_items = write_demo_data(args.out, seed=args.seed, num_users=args.users, num_items=args.items)
    logger.info("wrote %d reviews by %d users of %d items to %s", num_reviews, args.users, num_items, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
