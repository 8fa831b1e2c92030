"""Generate data/routing/compound_train.jsonl: multi-task queries plus single-task queries that contain "and".

Run from the repository root: `python data/routing/make_compound.py`. Seeded, so the output is reproducible.
Rows are {"text": query, "tasks": [tasks in protocol.TASKS order]}:

- compound: two or three task clauses joined by varied connectors ("and", "then", ", also", "as well as",
  "plus", "&", "and also tell me", ...), in every order;
- single-task negatives: one task whose wording still joins things ("is there a cat and a dog?" is VQA only,
  "detect cats and dogs" is OD only, "describe the man and his dog" is caption only).

The held-out sets (compound_heldout*.jsonl, heldout*.jsonl) are hand-written separately; generated queries
that match one after normalisation are dropped (after drawing, so that a new held-out set changes only its own
matches).

2026-12-03, third pass (clause styles the development sets compound_heldout_2/3 lost, none of their sentences):
VQA as a command ("count the circles", "check whether ...", "answer: ..."); questions that point back at the
objects ("how many are red?", "is the red one parked?"); caption and detection as bare noun phrases ("a short
description too", "the detections"); lists ("two things: a caption and the boxes"); a task ruled out before
the only one asked for ("don't describe it, just count the squares" is VQA only).
"""
from __future__ import annotations

import itertools
import json
import random
import re

from make_train import (ADJ, BOXES, COLOUR, HERE, IMG, OBJS, PERSON, STATE, THING, THIS, decorate, fill,
                        held_out_texts, normalise, plural, ruled_out)

SEED = 4321
PER_PAIR = 420          # per unordered task pair
TRIPLES = 240
NEGATIVES_PER_TASK = 180
RULED_OUT_PER_TASK = 80
TASK_ORDER = ("caption", "od", "vqa")

# Clauses that can stand as one part of a compound request. VQA comes as an embedded question ("whether
# the dog is happy") that a verb ("tell me") or the connector "and also tell me" introduces, or as a
# direct question.
CAPTION = [
    "describe {this} {img}", "describe the scene", "caption {this} {img}", "write a {adj} caption",
    "give me a {adj} description of {this} {img}", "summarize {this} {img}", "summarise what is going on",
    "write {adj} alt text for {this} {img}", "give an overview of the scene", "caption it",
    "tell me what {this} {img} shows", "explain what is happening in {this} {img}", "describe everything you see",
    "write a {adj} caption for {this} {img}", "sum up the {img}", "describe the setting", "caption the {img}",
    "give {this} {img} a {adj} caption", "describe what's going on", "provide a {adj} description",
    "describe it", "summarize it", "sum it up", "describe the drawing", "write alt text", "give me a description",
]
# Noun phrases that stand for a task in a list or after "plus" / "and": "a short description too".
CAPTION_NOUN = ["a {adj} description", "a caption", "{adj} alt text", "a summary of the scene", "a {adj} caption",
                "a {adj} description too", "a one-line caption as well", "a description of the {img}", "the caption"]
OD_NOUN = ["the detections", "{boxes} for {all} {objs}", "detections", "the {boxes}", "{boxes} for every object",
           "the object list with {boxes}", "locations of the {objs}", "detection results"]
CAPTION_EMBEDDED = ["what {this} {img} shows", "what is going on in the {img}", "what the scene looks like",
                    "what is happening in {this} {img}"]
OD = [
    "find {all} {objs}", "detect {all} {objs}", "list {all} {objs} with {boxes}", "locate {all} {objs}",
    "give me {boxes} for {all} {objs}", "draw {boxes} around {all} {objs}", "detect all objects",
    "find every object", "mark where the {objs} are", "box the {objs}", "localize {all} {objs}",
    "return {boxes} for each object", "detect {all} {objs} with {boxes}", "list the objects with {boxes}",
    "output the {boxes} of {all} {objs}", "spot {all} {objs} and give {boxes}", "run object detection",
    "put a box around each {obj}", "find {all} {objs} with {boxes}", "locate everything in {this} {img}",
    "box every shape", "give bounding boxes", "localize the {objs}", "annotate the {objs} with {boxes}",
    "bbox the {objs}", "run od", "get the detections",
]
OD_EMBEDDED = ["where {all} {objs} are with {boxes}", "the {boxes} of {all} {objs}", "where each object is"]
VQA_EMBEDDED = [
    "whether the {thing} is {state}", "what colour the {thing} is", "what color the {thing} is",
    "how many {things} there are", "if it is raining", "what the {person} is holding", "what the {person} is doing",
    "what the {person} is wearing", "whether there is a {thing}", "what time of day it is", "what the weather is like",
    "what is written on the {thing}", "which {thing} is bigger", "if the {person} is smiling", "what room this is",
    "what the {thing} is made of", "how many people are there", "what sport this is", "whether the {person} looks {state}",
]
VQA_DIRECT = [
    "is the {thing} {state}?", "what color is the {thing}?", "how many {things} are there?", "is it raining?",
    "what is the {person} holding?", "what is the {person} wearing?", "is there a {thing}?", "what time is it?",
    "where is the {thing}?", "is the {person} smiling?", "what is on the {thing}?", "what sport is this?",
    # pointing back at the objects just detected or described
    "how many are {colour}?", "is the {colour} one {state}?", "which one is biggest?", "is there a {colour} one?",
    "are any of them {colour}?", "which is the largest?", "how many of them are there?",
    "is the {colour} one on the left?",
    "which one is closest?", "what colour is the biggest one?", "are they all the same size?",
]
# VQA as a command.
VQA_COMMAND = ["count the {things}", "count how many {things} there are", "check if the {thing} is {state}",
               "find out whether there is a {thing}", "answer: {direct}", "answer this: {direct}",
               "say which {thing} is bigger", "count them", "check whether it is raining", "count the {colour} ones",
               "then answer: {direct}", "count the people"]
VQA_VERB = ["tell me ", "say ", "let me know ", "answer ", "tell me ", "explain "]
TELL = ["and also tell me ", "and tell me ", ", also tell me ", "and let me know ", "then tell me "]

# Connectors between two clauses; "{also}" variants read as "X, also Y".
JOIN = [" and ", " and ", " and ", " then ", ", then ", ", also ", " also ", " as well as ", " plus ", " & ",
        ", and ", ". Also, ", "; ", ". Then ", " and then ", ", after that ", " and additionally ", " + ",
        ". ", " and afterwards ", ", and also ", " along with that ", ", plus ", " and please "]

# Single-task wording that joins things without asking for a second task. Questions and detection requests
# that mention the image ("how many people are in this photo?") keep "photo" from reading as a caption clause.
NEGATIVE = {
    "caption": [
        "describe the {person} and the {thing}", "describe the {person} and his {thing}",
        "describe the {person} and her {thing}", "write a caption about the {things} and the {things2}",
        "describe the colours and the mood of {this} {img}", "summarize the people and the setting",
        "describe the {thing} and its surroundings", "caption this {img} of my {thing} and my {thing2}",
        "give me a {adj} description of the {things} and the {thing2}", "describe the scene and its atmosphere",
        "describe the landscape and the sky", "write a {adj} caption mentioning the {thing} and the {thing2}",
        "describe the {img}, including the {thing} and the background", "tell me about the {person} and the {thing}",
        "describe the foreground and the background", "summarize {this} {img} and its mood",
        "what is happening in {this} {img} and where?", "describe what the {person} and the {thing} are doing",
    ],
    "od": [
        "detect {objs} and {objs2}", "find the {objs} and the {objs2} with {boxes}", "locate and label every {obj}",
        "give labels and {boxes} for {all} {objs}", "find and box {all} {objs}", "detect {objs} as well as {objs2}",
        "box the {objs} and the {objs2}", "detect the {objs} plus the {objs2}", "locate {objs} & {objs2}",
        "find {objs}, {objs2} and {objs3} with {boxes}", "detect and localize {all} {objs}",
        "identify and locate {all} {objs}", "mark the {objs} and then the {objs2}", "find and outline each {obj}",
        "list {all} {objs} and {objs2} with {boxes}", "give me labels and coordinates for {all} {objs}",
        "find {all} {objs} in {this} {img} and return {boxes}", "list every item in {this} {img} with {boxes}",
        "detect everything in {this} {img} and output json", "run object detection on {this} {img} and give {boxes}",
    ],
    "vqa": [
        "is there a {thing} and a {thing2}?", "are the {person} and the {person2} {state}?",
        "how many {things} and {things2} are there?", "what are the {person} and the {person2} doing?",
        "is the {thing} {state} and {state2}?", "what is between the {thing} and the {thing2}?",
        "do the {thing} and the {thing2} have the same colour?", "are there {things} and {things2}?",
        "is the {person} holding a {thing} and a {thing2}?", "which is bigger, the {thing} or the {thing2}?",
        "is it cold and rainy?", "what are the {person} and his friend eating?",
        "are the {things} and the {things2} the same color?", "is the room clean and tidy?",
        "how many {things} plus {things2} are in the {img}?", "does the {person} have a {thing} and a {thing2}?",
        "how many people are in {this} {img} and how many {things}?", "what is the {person} doing in {this} {img}?",
        "what colour is the {thing} in {this} {img} and the {thing2}?", "is there a {thing} in {this} {img}?",
        "how many {things} are in {this} {img}?", "what are the people in {this} {img} wearing?",
    ],
}


def fill_more(template: str, rng: random.Random) -> str:
    """make_train.fill plus the slots compound templates add: {obj}, {objs2}, {thing2}, {person2}, ..."""
    extra = {"obj": ["object", "item", "person", "car", "animal", "dog", "chair", "bottle"],
             "objs2": OBJS, "objs3": OBJS, "thing2": THING, "things2": [plural(t) for t in THING],
             "person2": PERSON, "state2": STATE}
    text = re.sub(r"\{(obj|objs2|objs3|thing2|things2|person2|state2)\}", lambda m: rng.choice(extra[m.group(1)]),
                  template)
    return fill(text, rng)


def vqa_clause(rng: random.Random) -> str:
    draw = rng.random()
    if draw < 0.2:
        command = rng.choice(VQA_COMMAND).replace("{direct}", rng.choice(VQA_DIRECT))
        return fill_more(command.replace("{colour}", rng.choice(COLOUR)), rng)
    if draw < 0.55:
        return fill_more(rng.choice(VQA_DIRECT).replace("{colour}", rng.choice(COLOUR)), rng)
    return rng.choice(VQA_VERB) + fill_more(rng.choice(VQA_EMBEDDED), rng)


def clause(task: str, rng: random.Random) -> str:
    if task == "vqa":
        return vqa_clause(rng)
    return fill_more(rng.choice(CAPTION if task == "caption" else OD), rng)


def noun_phrase(task: str, rng: random.Random) -> str:
    """A task as a noun phrase for lists: "a short description", "the detections", "whether the dog is happy"."""
    if task == "vqa":
        return fill_more(rng.choice(VQA_EMBEDDED), rng)
    return fill_more(rng.choice(CAPTION_NOUN if task == "caption" else OD_NOUN), rng)


def listed(tasks: tuple[str, ...], rng: random.Random) -> str:
    """ "two things: a caption and the boxes", "i need a description plus the detections" """
    parts = [noun_phrase(task, rng) for task in rng.sample(tasks, len(tasks))]
    body = ", ".join(parts[:-1]) + rng.choice([" and ", ", and ", " plus ", " + ", ", "]) + parts[-1]
    count = {2: "two", 3: "three"}[len(parts)]
    opener = rng.choice([f"{count} things: ", f"{count} requests: ", "i need ", "give me ", "i want ", "please send ",
                         "can i get ", f"i need {count} things: "])
    return opener + body


def embedded(task: str, rng: random.Random) -> str:
    """What follows "and also tell me ...": an embedded question or object request."""
    pools = {"caption": CAPTION_EMBEDDED, "od": OD_EMBEDDED, "vqa": VQA_EMBEDDED}
    return fill_more(rng.choice(pools[task]), rng)


def join_two(first: str, second_task: str, rng: random.Random) -> str:
    if rng.random() < 0.2:                              # "..., also tell me whether the dog is happy"
        return f"{first} {rng.choice(TELL).strip()} {embedded(second_task, rng)}".replace(" ,", ",")
    return first + rng.choice(JOIN) + clause(second_task, rng)


def compound(tasks: tuple[str, ...], rng: random.Random) -> str:
    if rng.random() < 0.12:
        return listed(tasks, rng)
    order = rng.sample(tasks, len(tasks))
    text = clause(order[0], rng)
    for i, task in enumerate(order[1:], start=1):
        if len(order) == 3 and i == 1 and rng.random() < 0.5:
            text += ", " + clause(task, rng)          # "A, B and C"
        else:
            text = join_two(text, task, rng)
    return text


def generate(make, n: int, tasks: tuple[str, ...], rng: random.Random, seen: set[str],
             banned: set[str]) -> list[dict]:
    """n queries not in `seen` (the earlier groups') nor in `banned`. A tenth more are drawn and the banned ones
    dropped afterwards, so the random stream does not depend on `banned`: a new held-out set only removes its
    own matches."""
    rows = []
    for _ in range(60 * n):
        text = decorate(make(rng), rng)
        if normalise(text) not in seen:
            seen.add(normalise(text))
            rows.append({"text": text, "tasks": sorted(tasks, key=TASK_ORDER.index)})
        if len(rows) == n + n // 10:
            break
    return [row for row in rows if normalise(row["text"]) not in banned][:n]


def main() -> None:
    rng = random.Random(SEED)
    seen, banned = set(), held_out_texts()
    rows = []
    for pair in itertools.combinations(TASK_ORDER, 2):
        rows += generate(lambda r, p=pair: compound(p, r), PER_PAIR, pair, rng, seen, banned)
    rows += generate(lambda r: compound(TASK_ORDER, r), TRIPLES, TASK_ORDER, rng, seen, banned)
    for task, templates in NEGATIVE.items():
        rows += generate(lambda r, t=templates: fill_more(r.choice(t), r), NEGATIVES_PER_TASK, (task,), rng, seen,
                         banned)
    for task in TASK_ORDER:     # another task ruled out, then this one asked for: still one task
        rows += generate(lambda r, t=task: ruled_out(t, r) + r.choice([". just ", ", just ", ". ", "; only "])
                         + clause(t, r), RULED_OUT_PER_TASK, (task,), rng, seen, banned)
    rng.shuffle(rows)
    with open(HERE / "compound_train.jsonl", "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)


if __name__ == "__main__":
    main()
