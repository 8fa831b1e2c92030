"""The words of a scene: its caption and its VQA pairs (colour, count, presence, relative position).

Templates are fixed and objects are named column by column, left to right, so each image has one right answer
the model can learn exactly. A question is only asked when its answer is unambiguous (a unique shape, a clear
offset). Objects are named in several ways (by shape, by side, by colour, by colour and shape), so answers rest
on colour, shape and position alike. `restyle` gives the questions as people type them, for training.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np

if TYPE_CHECKING:
    from vlm_tools.demo.scenes import SceneObject

MIN_OFFSET = 0.08          # box centres closer than this on an axis make "left of"/"above" a coin toss
_COLOUR_WORDS = ("colour", "color")
_THING_WORDS = ("objects", "shapes")


def caption(objects: tuple[SceneObject, ...], background: str) -> str:
    """e.g. "a small red circle, a large blue square and a small green triangle on a dark background"."""
    names = [f"a {o.size} {o.colour} {o.shape}" for o in objects]
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return f"{listed} on a {background} background"


def questions(objects: tuple[SceneObject, ...], rng: np.random.Generator,
              colours: tuple[str, ...], shapes: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """One question of each kind the scene allows, in a fixed kind order."""
    makers: list[Callable[[], tuple[str, str] | None]] = [
        lambda: _colour_question(objects, rng),
        lambda: _count_question(objects, rng, colours, shapes),
        lambda: _presence_question(objects, rng, colours, shapes),
        lambda: _position_question(objects, rng),
    ]
    return tuple(qa for qa in (make() for make in makers) if qa is not None)


def _colour_question(objects, rng) -> tuple[str, str] | None:
    """About the object with a unique shape, or the one clearly leftmost or rightmost."""
    word = rng.choice(_COLOUR_WORDS)
    shapes = [o.shape for o in objects]
    by_shape = [(f"the {o.shape}", o) for o in objects if shapes.count(o.shape) == 1]
    by_side = [(f"the {side} object", o) for side, o in _extremes(objects)]
    pool = by_shape if by_shape and (not by_side or rng.random() < 0.5) else by_side
    if not pool:
        return None
    name, target = pool[rng.integers(len(pool))]
    return f"What {word} is {name}?", target.colour


def _extremes(objects) -> list[tuple[str, SceneObject]]:
    """("leftmost", obj) / ("rightmost", obj) where no other object is within MIN_OFFSET of it in x."""
    xs = sorted(objects, key=lambda o: o.center[0])
    found = []
    if len(xs) == 1 or xs[1].center[0] - xs[0].center[0] >= MIN_OFFSET:
        found.append(("leftmost", xs[0]))
    if len(xs) > 1 and xs[-1].center[0] - xs[-2].center[0] >= MIN_OFFSET:
        found.append(("rightmost", xs[-1]))
    return found


def _count_question(objects, rng, colours, shapes) -> tuple[str, str]:
    kind, noun = rng.integers(3), rng.choice(_THING_WORDS)
    if kind == 0:
        return f"How many {noun} are there?", str(len(objects))
    if kind == 1:
        colour = str(rng.choice(colours))
        return f"How many {colour} {noun} are there?", str(sum(o.colour == colour for o in objects))
    shape = str(rng.choice(shapes))
    return f"How many {shape}s are there?", str(sum(o.shape == shape for o in objects))


def _presence_question(objects, rng, colours, shapes) -> tuple[str, str]:
    """Half ask for a colour and a shape together; the rest for a colour or a shape alone."""
    form = rng.choice(["both", "both", "colour", "shape"])
    if form == "colour":
        colour = str(rng.choice(colours))
        return f"Is there {with_article(colour)} object?", _yes(any(o.colour == colour for o in objects))
    if form == "shape":
        shape = str(rng.choice(shapes))
        return f"Is there a {shape}?", _yes(any(o.shape == shape for o in objects))
    present = {(o.colour, o.shape) for o in objects}
    if rng.random() < 0.5:
        colour, shape = sorted(present)[rng.integers(len(present))]
        return f"Is there {with_article(colour)} {shape}?", "yes"
    absent = [(c, s) for c in colours for s in shapes if (c, s) not in present]
    # Half the negatives share a colour or a shape with something present: the model must bind both.
    near = [(c, s) for c, s in absent if any(c == pc or s == ps for pc, ps in present)]
    pool = near if near and rng.random() < 0.5 else absent
    colour, shape = pool[rng.integers(len(pool))]
    return f"Is there {with_article(colour)} {shape}?", "no"


def with_article(word: str) -> str:
    """ "an orange", "a red": the article questions use."""
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def _yes(truth: bool) -> str:
    return "yes" if truth else "no"


def _position_question(objects, rng) -> tuple[str, str] | None:
    """Objects are named by colour where that is unique in the scene, else by colour and shape."""
    options = _position_options(objects)
    return options[rng.integers(len(options))] if options else None


def position_questions(objects: tuple[SceneObject, ...], rng: np.random.Generator, count: int) -> list[tuple[str, str]]:
    """Up to `count` different position questions about a scene: extra practice on relations, which the other
    question kinds hardly need (training only; the scene's own questions are unchanged)."""
    options = _position_options(objects)
    chosen = rng.choice(len(options), size=min(count, len(options)), replace=False) if options else []
    return [options[i] for i in chosen]


def _position_options(objects) -> list[tuple[str, str]]:
    colours = [o.colour for o in objects]
    name = {id(o): f"{o.colour} object" if colours.count(o.colour) == 1 else o.label for o in objects}
    options = []
    for a in objects:
        for b in objects:
            dx, dy = b.center[0] - a.center[0], b.center[1] - a.center[1]
            if a is not b and abs(dx) >= MIN_OFFSET:
                options += [(a, b, "to the left of", dx > 0), (a, b, "to the right of", dx < 0)]
            if a is not b and abs(dy) >= MIN_OFFSET:
                options += [(a, b, "above", dy > 0), (a, b, "below", dy < 0)]
    return [(f"Is the {name[id(a)]} {relation} the {name[id(b)]}?", _yes(truth)) for a, b, relation, truth in options]


def question_kind(question: str) -> str:
    """The template a question came from: colour, shape, count, presence or position."""
    for prefix, kind in (("What colo", "colour"), ("How many", "count"),
                         ("Is there", "presence"), ("Is the", "position")):
        if question.startswith(prefix):
            return kind
    raise ValueError(f"not a demo question: {question!r}")


def restyle(question: str, rng: np.random.Generator) -> str:
    """The same question as people type it: lower case, without "?", in the other spelling of colour."""
    if rng.random() < 0.3:
        question = question.lower()
    if rng.random() < 0.3:
        question = question.rstrip("?")
    if rng.random() < 0.3:
        question = swap_spelling(question)
    return question


def swap_spelling(question: str) -> str:
    """colour <-> color, either case."""
    for british, american in (("colour", "color"), ("Colour", "Color")):
        if british in question:
            return question.replace(british, american)
        if american in question:
            return question.replace(american, british)
    return question
