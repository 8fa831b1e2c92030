"""Generate data/routing/train.jsonl: routing queries from templates, slot fillers and noise.

Run from the repository root: `python data/routing/make_train.py`. Seeded, so the output is reproducible.
heldout.jsonl is hand-written separately; any generated query that matches a held-out one after
normalisation is dropped so the held-out set stays unseen.
"""
from __future__ import annotations

import itertools
import json
import random
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
PER_TASK = 420
SEED = 1234

IMG = ["image", "picture", "photo", "pic", "photograph", "shot", "snapshot", "frame", "img"]
THIS = ["this", "the", "my", "this attached", "the following"]
ADJ = ["short", "brief", "detailed", "concise", "one-line", "long", "quick", "simple", "accurate", "vivid",
       "two-sentence", "natural", "factual", "descriptive"]
POLITE = ["", "", "", "please ", "can you ", "could you ", "would you ", "hey, ", "i need you to ",
          "kindly ", "pls ", "i'd like you to ", "go ahead and ", "now ", "ok ", "quickly "]
TAIL = ["", "", "", " please", " thanks", " for me", " thank you", " asap", " if you can", " :)"]

CAPTION = [
    "describe {this} {img}", "describe what you see in {this} {img}", "give me a {adj} description of {this} {img}",
    "write a {adj} caption for {this} {img}", "caption {this} {img}", "generate a {adj} caption",
    "summarize {this} {img}", "summarize the scene", "summarise what is shown", "what's in {this} {img}",
    "what is in {this} {img}", "what does {this} {img} show", "what's happening in {this} {img}",
    "tell me about {this} {img}", "what can you see", "explain {this} {img}", "provide a {adj} description",
    "create alt text for {this} {img}", "what is going on here", "describe the setting",
    "give an overview of {this} {img}", "what is {this} {img} of", "what does the {img} depict",
    "write a {adj} paragraph about {this} {img}", "how would you caption {this} {img}",
    "describe everything in {this} {img}", "what do you see in {this} {img}", "caption", "describe",
    "image captioning", "write a {adj} caption", "describe the whole scene", "what is this {img} about",
    "tell me what's going on in {this} {img}", "sum up {this} {img}", "give me the gist of {this} {img}",
    "what's the {img} showing", "put {this} {img} into words", "describe the mood and setting of {this} {img}",
    "write a {adj} story-like description of the scene", "produce a {adj} caption for social media",
    "what does {this} {img} look like", "give {this} {img} a caption", "can you describe the scene in {this} {img}",
    "describe the {img} in one sentence", "what am i looking at", "summarize the contents of {this} {img}",
]

OBJS = ["objects", "items", "things", "people", "cars", "animals", "persons", "vehicles", "dogs", "faces",
        "bottles", "chairs", "pedestrians", "bicycles", "visible objects", "cats", "products"]
ALL = ["all", "all the", "every one of the", "each of the", "the", ""]
BOXES = ["bounding boxes", "boxes", "bboxes", "coordinates", "box coordinates", "locations", "positions",
         "rectangles", "x, y, w, h boxes", "normalized boxes"]
OD = [
    "detect {all} {objs}", "detect {all} {objs} in {this} {img}", "find {all} {objs} with {boxes}",
    "list {all} {objs} with {boxes}", "where is everything", "where is everything in {this} {img}",
    "where are the {objs}? give {boxes}", "where are the objects? give coordinates", "localize {all} {objs}",
    "locate {all} {objs}", "draw {boxes} around {all} {objs}", "give me {boxes} for {all} {objs}",
    "object detection", "run object detection on {this} {img}", "output the {boxes} of {all} {objs}",
    "identify {all} {objs} and their {boxes}", "mark {all} {objs} with {boxes}", "return labels and {boxes}",
    "what objects are present and where are they", "give {boxes} for each object", "list all objects",
    "list every object and where it is", "detect and localize {objs}", "find the {objs} and box them",
    "show me the location of {all} {objs}", "put a box around each of the {objs}",
    "where are all the {objs} located", "i want {boxes} for {all} {objs}", "json of objects with {boxes}",
    "enumerate {all} {objs} in {this} {img} with {boxes}", "label {all} {objs} and give {boxes}",
    "bounding box detection", "detect stuff", "find objects", "locate objects in {this} {img}",
    "where is each object", "give me the positions of {all} {objs}", "spot {all} {objs}",
    "object localization for {this} {img}", "point out where the {objs} are with {boxes}",
    "find and mark {all} {objs}", "detect every object you can", "what are the coordinates of the {objs}",
]

THING = ["car", "dog", "cat", "man", "woman", "boy", "girl", "bus", "ball", "shirt", "table", "sky", "house",
         "bike", "horse", "kite", "laptop", "phone", "cup", "tree", "train", "sign", "bird", "child", "wall",
         "umbrella", "truck", "door", "player", "baby", "food", "jacket", "boat", "bench", "cake", "bag"]
PERSON = ["man", "woman", "boy", "girl", "child", "person", "player", "chef", "lady", "guy", "kid",
          "person on the right", "man in the red shirt", "baby", "skier", "surfer"]
STATE = ["happy", "sad", "open", "closed", "wet", "empty", "full", "red", "old", "new", "asleep", "clean",
         "broken", "moving", "big", "small", "on", "off", "angry", "tired", "dirty"]
VQA = [
    "what color is the {thing}", "what colour are the {thing}'s eyes", "how many {things} are there",
    "how many {things} are in {this} {img}", "count the {things}", "is the {thing} {state}",
    "are there any {things}", "is there a {thing} in {this} {img}", "is it raining", "is it sunny",
    "is it night time", "is it snowing", "where is the {thing}", "where is the {thing} sitting",
    "where is the {person} standing", "what is next to the {thing}", "what is on the {thing}",
    "what is behind the {person}", "what is the {person} holding", "what is the {person} doing",
    "what is the {person} wearing", "what is the {person} eating", "what is the {person} looking at",
    "is the {thing} happy", "does the {person} look {state}", "what kind of {thing} is this",
    "what type of {thing} is it", "what sport is this", "what time of day is it", "what's the weather like",
    "what is written on the {thing}", "which {thing} is bigger", "is the {person} smiling",
    "what is in the {person}'s hand", "what is inside the {thing}", "is the {person} {state}",
    "who is holding the {thing}", "how many people are wearing hats", "does the {thing} have wheels",
    "are the {things} the same color", "is this indoors or outdoors", "what brand is the {thing}",
    "what is the {thing} made of", "is there any {thing} visible", "what animal is shown",
    "which way is the {thing} facing", "what room is this", "are there more {things} than people",
    "is the {person} sitting or standing", "what is the {thing} doing", "can you see a {thing}",
    "what number is on the {thing}", "why is the {person} {state}", "how tall is the {thing}",
    "what season is it", "is the {thing} {state} or not", "does it look cold outside",
]

QUESTION_START = re.compile(r"^(what|how|is|are|does|do|where|who|which|why|can|could|would)\b")


def fill(template: str, rng: random.Random) -> str:
    """Replace each {slot} with a random filler (several occurrences of a slot draw independently)."""
    slots = {"img": IMG, "this": THIS, "adj": ADJ, "objs": OBJS, "all": ALL, "boxes": BOXES, "thing": THING,
             "things": [plural(t) for t in THING], "person": PERSON, "state": STATE}
    text = re.sub(r"\{(\w+)\}", lambda m: rng.choice(slots[m.group(1)]), template)
    return re.sub(r"\s+", " ", text).strip()


def plural(noun: str) -> str:
    irregular = {"man": "men", "woman": "women", "child": "children", "bus": "buses", "sky": "skies",
                 "baby": "babies", "food": "dishes"}
    return irregular.get(noun, noun + "s")


def typo(word: str, rng: random.Random) -> str:
    """One keyboard-style slip: swap, drop or double a character."""
    i = rng.randrange(1, len(word) - 1)
    kind = rng.choice(("swap", "drop", "double"))
    if kind == "swap":
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    return word[:i] + word[i + 1:] if kind == "drop" else word[:i] + word[i] + word[i:]


def decorate(text: str, rng: random.Random) -> str:
    """Politeness, punctuation, casing and the occasional typo, so surface form varies."""
    is_question = bool(QUESTION_START.match(text))
    text = (rng.choice(["", "", "hey, ", "quick question: ", "so "]) if is_question else rng.choice(POLITE)) + text
    text += rng.choice(["?", "?", "", " ?"] if is_question else ["", ".", "!", ""]) + rng.choice(TAIL)
    words = text.split()
    if rng.random() < 0.2:
        j = rng.randrange(len(words))
        words[j] = typo(words[j], rng) if len(words[j]) > 3 else words[j]
    text = " ".join(words)
    style = rng.random()
    return text.upper() if style < 0.03 else text.capitalize() if style < 0.5 else text


def normalise(text: str) -> str:
    return re.sub(r"[^a-z0-9 ]", "", text.lower()).strip()


def generate(templates: list[str], task: str, rng: random.Random, banned: set[str]) -> list[dict]:
    rows, seen = [], set(banned)
    for template in itertools.islice(itertools.cycle(templates), 50 * PER_TASK):
        text = decorate(fill(template, rng), rng)
        if normalise(text) not in seen:
            seen.add(normalise(text))
            rows.append({"text": text, "task": task})
    rng.shuffle(rows)
    return rows[:PER_TASK]


def main() -> None:
    rng = random.Random(SEED)
    heldout = {normalise(json.loads(line)["text"]) for line in open(HERE / "heldout.jsonl")}
    rows = [row for templates, task in ((CAPTION, "caption"), (OD, "od"), (VQA, "vqa"))
            for row in generate(templates, task, rng, heldout)]
    rng.shuffle(rows)
    with open(HERE / "train.jsonl", "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)


if __name__ == "__main__":
    main()
