"""Generate data/routing/train.jsonl: routing queries from templates, slot fillers and noise.

Run from the repository root: `python data/routing/make_train.py`. Seeded, so the output is reproducible.
The held-out sets (heldout*.jsonl, compound_heldout*.jsonl) are hand-written separately; any generated query
that matches a held-out one after normalisation is dropped so they stay unseen (after drawing, so that a new
held-out set changes only its own matches).

Besides plain requests the templates cover the shapes of the demo scenes ("how many triangles"), terse
requests ("boxes"), indirect ones ("can you tell me whether ..."), a neutral first sentence ("i took this
yesterday. describe it") and a task ruled out before another is asked for ("no caption needed. detect the
cars"), so the router reads "caption" in "skip the caption" as no request for one.

2026-12-03, second pass (general styles, none taken from a held-out set): bare task nouns with and without a
verb ("return a caption", "detection results", "just boxes"), whole-image questions that name no object ("what
do we have in this photo", "what's shown here"), more indirect frames ("let me know whether ..."), a wider set
of neutral first sentences and a sentence after the request that only says what answer is wanted ("keep it
short", "json is fine", "one word is fine"), VQA ruled out as well, up to two slips per query in any word of
three letters or more (a left-out vowel too: "mny") and dropped apostrophes ("whats"); 1,500 queries per task.

2026-12-03, third pass (styles the development sets heldout_styles_2/3 missed, none of their sentences): a task
ruled out in few words before the request ("no caption. boxes only", "hold the description"), or after it ("boxes,
not a caption", "... instead of a description"); abbreviations ("run od", "obj det", "cap this", "q: ..."); text
speak ("hw mny ppl r thr", "pls", "w/"); questions about generic objects ("which item is nearest the camera",
"what's in the foreground"), which read like detection requests; first sentences that say what the image holds
("here's a sketch of some circles"); drawings, screenshots and renders besides photos; shapes as detection
targets.
"""
from __future__ import annotations

import itertools
import json
import random
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
PER_TASK = 1500
SEED = 1234

IMG = ["image", "picture", "photo", "pic", "photograph", "shot", "snapshot", "frame", "img", "drawing", "screenshot",
       "sketch", "illustration", "render", "painting", "scan"]
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
    # terse
    "caption please", "description", "summary", "overview", "alt text", "{adj} caption", "{adj} description",
    # indirect
    "any idea what {this} {img} shows", "can you tell me what {this} {img} is about", "how would you describe it",
    "i'd like to know what {this} {img} shows", "do you know what is going on in {this} {img}",
    "what would you say {this} {img} shows", "i'm curious what the scene is", "what is this a {img} of",
    # a question about the whole image, not one thing in it
    "what have we got here", "what's this", "what is this", "what's the {img} about", "what's the gist",
    "what do we have in {this} {img}", "what do you have there", "what's here", "what is shown here",
    "what's shown in {this} {img}", "what do you make of {this} {img}", "what can you tell me about {this} {img}",
    "what's this one about", "what is happening here", "what's going on", "what is it showing",
    "how would you describe what's here", "talk me through {this} {img}", "give me a rundown of {this} {img}",
    "fill me in on {this} {img}", "what's the scene here", "what is in front of me", "what did i capture here",
    # terse task nouns, with and without a verb
    "return a caption", "return a {adj} description", "output a caption", "caption output", "{img} caption",
    "description of {this} {img}", "caption for {this} {img}", "a {adj} caption for {this} {img}",
    "just a caption", "caption only", "description only", "the caption", "a description", "summary of {this} {img}",
    "captioning", "describe it", "describe this", "caption it", "summarize", "scene summary",
    # abbreviations and "X only"
    "cap this", "cap it pls", "img caption", "a quick desc", "desc of {this} {img}", "caption this {img} only",
    "only a caption", "a caption and nothing else", "{adj} caption, nothing more", "text description only",
    "just describe {this} {img}", "only describe it", "captioning only", "gen caption", "auto-caption {this} {img}",
    # describe a part of the whole picture, or the picture for a purpose
    "describe the drawing", "describe the background", "describe the {img} for someone who can't see it",
    "describe {this} {img} for a catalogue", "write the {img}'s caption for our site", "what does {this} {img} convey",
    "describe what's in the foreground and background", "what's the overall scene", "give me the big picture",
    "how would you sum up {this} {img} in a sentence", "describe the layout of the scene",
]

OBJS = ["objects", "items", "things", "people", "cars", "animals", "persons", "vehicles", "dogs", "faces",
        "bottles", "chairs", "pedestrians", "bicycles", "visible objects", "cats", "products", "shapes", "triangles",
        "circles", "squares", "signs", "boxes on the shelf"]
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
    # terse
    "boxes", "bounding boxes", "detections", "bboxes", "{boxes} only", "{objs} with {boxes}", "detect",
    # indirect
    "could you tell me where {all} {objs} are", "i'd like to know where {all} {objs} are",
    "can you show me where each object is", "would you mind boxing {all} {objs}",
    "is it possible to get {boxes} for {all} {objs}", "do you think you could locate {all} {objs}",
    "i was wondering where {all} {objs} are", "can i get {boxes} for {all} {objs}",
    # terse task nouns, with and without a verb
    "return detections", "return {boxes}", "output detections", "give detections", "show detections",
    "detection on {this} {img}", "detections for {this} {img}", "detection results", "object detection results",
    "detection please", "just {boxes}", "only detections", "detections only", "the {boxes}", "{boxes} please",
    "detection", "object boxes", "objects and {boxes}", "{objs} and their {boxes}", "detect objects",
    "locate them all", "box everything", "box them", "localize", "detect them", "where is everything located",
    "all {objs} with {boxes}", "{boxes} for each {objsing}", "where every {objsing} is",
    # abbreviations and "X only"
    "run od", "od", "od please", "od on {this} {img}", "do od", "od only", "od output", "obj det", "object det",
    "run det", "det only", "bbox it", "bbox {all} {objs}", "bbox the {objs}", "run detection", "run the od model",
    "detect {objs} only", "{objs} only, with {boxes}", "only the {boxes}", "nothing but {boxes}",
    "{boxes} and nothing else", "coords only", "coords for {all} {objs}", "bboxes pls", "det results",
    # box / locate phrased as annotation or a data format
    "annotate {this} {img} with {boxes}", "annotate the {objs}", "get the detections for {this} {img}",
    "tag the {objs} with {boxes}", "output {objs} as json with {boxes}", "give the position of every {objsing}",
    "label every {objsing} and where it is", "pin down where the {objs} are", "outline the {objs} with rectangles",
]

THING = ["car", "dog", "cat", "man", "woman", "boy", "girl", "bus", "ball", "shirt", "table", "sky", "house",
         "bike", "horse", "kite", "laptop", "phone", "cup", "tree", "train", "sign", "bird", "child", "wall",
         "umbrella", "truck", "door", "player", "baby", "food", "jacket", "boat", "bench", "cake", "bag",
         "triangle", "circle", "square", "rectangle", "shape", "star"]
COLOUR = ["red", "blue", "green", "yellow", "white", "black", "orange", "purple", "grey"]
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
    "what colour is the {thing}", "is the {thing} {colour}", "is there a {colour} {thing}", "how many {colour} {things}",
    "which {thing} is the largest", "is the {thing} left of the {thing}", "what is above the {thing}",
    # terse
    "{thing} {state}?", "how many {things}?", "any {things}?", "colour of the {thing}?", "number of {things}?",
    "{thing} colour?", "{colour} or {colour}?",
    # indirect
    "can you tell me {question}", "i'd like to know {question}", "i wonder {question}", "do you know {question}",
    "any idea {question}", "i'm curious {question}", "could you check {question}",
    "i was wondering {question}", "let me know {question}", "help me figure out {question}", "tell me {question}",
    "please check {question}", "find out {question}", "just tell me {question}", "question: {question}",
    "{thing} present?", "{thing} visible?", "yes or no: is the {thing} {state}", "count of {things}?",
    "how many {colour} {things} are there", "what colour are the {things}", "is the {colour} {thing} bigger",
    "which {thing} is {colour}", "is there more than one {thing}", "are all the {things} {colour}",
    "what's the {person} up to", "what does the {thing} look like", "is the {thing} on the left or the right",
    # questions about generic objects and positions (not requests for boxes)
    "which {objsing} is closest to the camera", "which {objsing} is furthest away", "what is nearest the camera",
    "which {objsing} is in front", "what's in the foreground", "what is in the background", "which {objsing} is on top",
    "which {objsing} is the smallest", "is any {objsing} touching the edge", "how many {objsing}s are there",
    "which {objsing} is in the middle", "what is the leftmost {objsing}", "is the {objsing} on the right {colour}",
    "which {objsing} is highest up", "are the {objsing}s overlapping", "what is the biggest {objsing}",
    "how far apart are the {things}", "is anything on the {thing}", "does any {objsing} look {state}",
    # terse choices and abbreviations
    "{state} or {state}?", "{colour} or not?", "q: {question}", "qa: how many {things}",
    "vqa: what colour is the {thing}",
    "question - is the {thing} {state}", "{things}: how many?", "yes/no - any {things}?",
]
EMBEDDED_QUESTION = [
    "whether the {thing} is {state}", "what colour the {thing} is", "how many {things} there are",
    "if it is raining", "what the {person} is holding", "if the {person} is smiling", "whether there is a {thing}",
    "which {thing} is bigger", "what is written on the {thing}", "if the {thing} is {colour}",
    "how many {colour} {things} there are", "whether the {things} are {colour}", "what the {thing} is made of",
    "where the {thing} is", "what colour the {things} are", "whether there are any {things}",
]

# A task ruled out, then another asked for: "<ruled out><connector><request>".
RULED_OUT = {
    "caption": {"noun": ["caption", "description", "summary", "alt text"], "verb": ["describe", "caption", "summarize"]},
    "od": {"noun": ["boxes", "bounding boxes", "detection", "coordinates", "object list", "detections"],
           "verb": ["detect anything", "box anything", "locate the objects", "give boxes", "list the objects"]},
    "vqa": {"noun": ["question answering", "counting", "yes/no answer"],
            "verb": ["answer a question", "count anything"]},
}
RULE_OUT = ["no {noun} needed", "skip the {noun}", "forget the {noun}", "never mind the {noun}", "no {noun} please",
            "i don't need the {noun}", "without the {noun}", "don't {verb}", "you don't have to {verb}",
            "{noun} not required", "not the {noun}", "no {noun}", "no {noun}", "not a {noun}", "no need for {noun}",
            "leave out the {noun}", "drop the {noun}", "hold the {noun}", "{noun}? no", "no {noun} this time",
            "don't {verb} the {img}", "no need to {verb}", "i don't want {noun}", "{noun} isn't needed"]
# After the request: another task turned down ("boxes, not a caption").
NOT_INSTEAD = [", not {noun}", ", not the {noun}", " instead of {noun}", " rather than {noun}", ". no {noun}",
               ". not {noun}", " - no {noun}", ", no {noun} needed", " (no {noun})"]
RULED_OUT_THEN = [". ", ", ", ". just ", ", just ", ". only ", "; ", ". instead ", " - ", ". ", "! "]
FIRST_SENTENCE = ["i took this yesterday", "here is an image", "this one is from my phone", "quick one",
                  "i need some help", "this is for a report", "my friend sent me this", "it's a test image",
                  "here's a drawing", "this came in today", "new upload", "one more picture",
                  "this is for a school project", "we are testing the system", "the image is a bit blurry",
                  "sorry for the bad quality", "taken this morning", "it's for our app", "i'm writing a blog post",
                  "we are building a robot", "this goes into a spreadsheet", "i have a question", "check this out",
                  "here you go", "another one", "got a second", "thanks in advance", "this is from a camera feed",
                  "i work in a warehouse", "my boss asked for this", "it's a screenshot", "from the archive",
                  "the lighting is bad", "this is a synthetic scene", "it's a render", "ok next image",
                  "hello", "hi there", "good morning", "one more", "same as before", "this photo is from the park",
                  "this picture was taken at a game", "the image shows a test pattern", "i'm a teacher",
                  "we need this for an audit", "it's for a presentation", "urgent", "for my records",
                  # what the image holds, said before the request
                  "here's a {img} of some {things}", "this {img} has a few {things} in it",
                  "it's a {img} of my {thing}",
                  "there are some {things} here", "i drew some {things}", "this is a {img} of a {person}",
                  "the {img} shows a {colour} {thing}", "we photographed the {things} at work",
                  "it's a {img} with {things} and {things}", "here is a {img} of {things}"]
# A sentence after the request that only restates what kind of answer is wanted.
FOLLOW_UP = {
    "caption": ["keep it short", "one sentence is enough", "a few words will do", "nothing too long",
                "be descriptive", "make it friendly", "plain language please", "thanks", "that's all"],
    "od": ["json is fine", "normalized coordinates please", "use x, y, w, h", "include every object",
           "labels too", "that's all i need", "thanks", "list format please", "don't miss any"],
    "vqa": ["one word is fine", "just the answer", "a short answer", "yes or no", "thanks", "that's all",
            "be brief", "i need the answer for a form"],
}

QUESTION_START = re.compile(r"^(what|how|is|are|does|do|where|who|which|why|can|could|would|any)\b")


def fill(template: str, rng: random.Random) -> str:
    """Replace each {slot} with a random filler (several occurrences of a slot draw independently)."""
    slots = {"img": IMG, "this": THIS, "adj": ADJ, "objs": OBJS, "all": ALL, "boxes": BOXES, "thing": THING,
             "things": [plural(t) for t in THING], "person": PERSON, "state": STATE, "colour": COLOUR,
             "question": EMBEDDED_QUESTION, "objsing": ["object", "item", "thing", "shape", "person", "car"]}
    for _ in range(2):                  # {question} holds slots of its own
        template = re.sub(r"\{(\w+)\}", lambda m: rng.choice(slots[m.group(1)]), template)
    text = template
    return re.sub(r"\s+", " ", text).strip()


def plural(noun: str) -> str:
    irregular = {"man": "men", "woman": "women", "child": "children", "bus": "buses", "sky": "skies",
                 "baby": "babies", "food": "dishes"}
    return irregular.get(noun, noun + "s")


def typo(word: str, rng: random.Random) -> str:
    """One keyboard-style slip: swap, drop or double a character, or leave out a vowel."""
    i = rng.randrange(1, len(word) - 1)
    kind = rng.choice(("swap", "drop", "double", "vowel"))
    vowels = [j for j in range(1, len(word)) if word[j] in "aeiou"]
    if kind == "vowel" and vowels:
        j = rng.choice(vowels)
        return word[:j] + word[j + 1:]
    if kind == "swap":
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    return word[:i] + word[i + 1:] if kind in ("drop", "vowel") else word[:i] + word[i] + word[i:]


def decorate(text: str, rng: random.Random, *, opener: bool = True) -> str:
    """Politeness, punctuation, casing and the occasional typo, so surface form varies. `opener` False: no
    "please " / "can you " in front (terse requests: "can you boxes" is no one's English)."""
    is_question = bool(QUESTION_START.match(text))
    if opener:
        text = (rng.choice(["", "", "hey, ", "quick question: ", "so "]) if is_question else rng.choice(POLITE)) + text
    text += rng.choice(["?", "?", "", " ?"] if is_question else ["", ".", "!", ""]) + rng.choice(TAIL)
    if rng.random() < 0.06:
        text = text_speak(text, rng).lower()
    words = text.split()
    for _ in range(rng.choice((0, 0, 0, 1, 1, 2))):       # a third of the queries with one slip, a sixth with two
        j = rng.randrange(len(words))
        words[j] = typo(words[j], rng) if len(re.sub(r"\W", "", words[j])) >= 3 and words[j].isalpha() else words[j]
    text = " ".join(words)
    if rng.random() < 0.15:                               # "whats", "dont", "im"
        text = text.replace("'", "")
    style = rng.random()
    return text.upper() if style < 0.03 else text.capitalize() if style < 0.5 else text


TEXT_SPEAK = {"how": "hw", "many": "mny", "people": "ppl", "are": "r", "you": "u", "please": "pls", "what": "wat",
              "what's": "wats", "the": "da", "with": "w/", "picture": "pic", "image": "img", "there": "thr",
              "for": "4", "to": "2", "thanks": "thx", "and": "n", "your": "ur", "coordinates": "coords",
              "description": "desc", "is": "iz", "be": "b", "see": "c", "why": "y", "okay": "ok", "photo": "foto",
              "just": "jst", "this": "dis", "that": "dat", "give": "giv", "everything": "evrythng",
              "objects": "objs", "object": "obj", "detection": "det", "boxes": "bxs"}


def text_speak(text: str, rng: random.Random) -> str:
    """Chat-style abbreviations for some of the words: "how many people are there" -> "hw mny ppl r thr"."""
    words = text.split()
    return " ".join(TEXT_SPEAK.get(w.lower(), w) if w.lower() in TEXT_SPEAK and rng.random() < 0.7 else w
                    for w in words)


def normalise(text: str) -> str:
    return re.sub(r"[^a-z0-9 ]", "", text.lower()).strip()


def ruled_out(task: str, rng: random.Random) -> str:
    """A phrase ruling out another task than `task`: "skip the caption", "no boxes needed"."""
    other = rng.choice([t for t in RULED_OUT if t != task])
    words = RULED_OUT[other]
    return fill(re.sub(r"\{(noun|verb)\}", lambda m: rng.choice(words[m.group(1)]), rng.choice(RULE_OUT)), rng)


def not_instead(task: str, rng: random.Random) -> str:
    """A tail turning down another task than `task`: ", not a caption", " instead of a description"."""
    other = rng.choice([t for t in RULED_OUT if t != task])
    noun = rng.choice(RULED_OUT[other]["noun"])
    noun = rng.choice(["a ", "", "the "]) + noun if other == "caption" else noun
    return rng.choice(NOT_INSTEAD).replace("{noun}", noun)


def with_context(text: str, task: str, rng: random.Random) -> str:
    """Sometimes a neutral first sentence or a ruled-out task before the (decorated) request, and sometimes a
    sentence after it that only says what kind of answer is wanted."""
    if rng.random() < 0.12:
        follow = rng.choice(FOLLOW_UP[task])
        text = text.rstrip(" .!") + rng.choice([". ", ". ", ", ", "! "]) + (follow.capitalize() if rng.random() < 0.5
                                                                            else follow) + rng.choice([".", "", "!"])
    elif rng.random() < 0.05:
        text = text.rstrip(" .!?") + not_instead(task, rng) + rng.choice([".", "", "!"])
    draw = rng.random()
    if draw < 0.18:
        first = fill(rng.choice(FIRST_SENTENCE), rng) + rng.choice([". ", "! ", ", "])
    elif draw < 0.33:
        first = ruled_out(task, rng) + rng.choice(RULED_OUT_THEN)
    else:
        return text
    return (first.capitalize() if rng.random() < 0.5 else first) + text


def takes_opener(template: str) -> bool:
    """Terse ("boxes") and first-person ("i'd like to know ...") requests get no "please " / "can you " before
    them: "can you boxes" is no one's English."""
    return len(template.split()) > 3 and not re.match(r"i\b|i'", template)


def generate(templates: list[str], task: str, rng: random.Random, banned: set[str]) -> list[dict]:
    """PER_TASK distinct queries, none in `banned`. The random stream does not depend on `banned`, so a new
    held-out set only removes its own matches (the next candidates take their places)."""
    rows, seen = [], set()
    for template in itertools.islice(itertools.cycle(templates), 50 * PER_TASK):
        text = with_context(decorate(fill(template, rng), rng, opener=takes_opener(template)), task, rng)
        if normalise(text) not in seen:
            seen.add(normalise(text))
            rows.append({"text": text, "task": task})
    rng.shuffle(rows)
    return [row for row in rows if normalise(row["text"]) not in banned][:PER_TASK]


def held_out_texts() -> set[str]:
    """Every hand-written held-out query, normalised."""
    return {normalise(json.loads(line)["text"]) for path in sorted(HERE.glob("*heldout*.jsonl"))
            for line in open(path) if line.strip()}


def main() -> None:
    rng = random.Random(SEED)
    heldout = held_out_texts()
    rows = [row for templates, task in ((CAPTION, "caption"), (OD, "od"), (VQA, "vqa"))
            for row in generate(templates, task, rng, heldout)]
    rng.shuffle(rows)
    with open(HERE / "train.jsonl", "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)


if __name__ == "__main__":
    main()
