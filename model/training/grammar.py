"""An open grammar of the domain's field-inspection reports, and what each report says.

``_TEMPLATES`` (twelve sentence forms) taught the model those forms more than the sounds of the
words: a form the domain page allows but no template made came out as a template (95% WER on
such forms). This grammar combines clauses (a finding, a state, a reading, an action), draws the
component phrase, the clause's word order, where numbers stand and how clauses are joined, so
that it makes thousands of forms. Each report carries

- ``form``: its signature, the words with every slot replaced by its class (``COMP number NUM
  shows COND``); forms are split into trained and held-out ones by a hash of the signature and by
  a few clause orders that only held-out forms use, so that a held-out WER measures forms the
  model never heard;
- ``findings``, ``actions``, ``readings``: the facts the documented questions ask about (the
  generator's truth for answers).

``random_string`` draws vocabulary words in no order (the text prior cannot carry them); the
``numbers`` flavour packs readings (number words where a guess is easy: teen/ty, nine/one).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from . import domain as D

__all__ = ["Report", "report", "random_string", "utterance_text", "SPOKEN_WORDS", "FLAVOURS", "is_heldout_form",
           "QUESTIONS", "NONE", "answer", "scene_answer", "caption_answer"]

FUNCTION_WORDS = "the a at on is has and number shows found priority it of".split()
SPOKEN_WORDS = sorted(set(" ".join(D.NUMBER_WORDS).split()) | set(D.COMPONENTS) | set(D.CONDITIONS) | set(D.STATES)
                      | set(D.UNITS) | set(D.QUANTITIES) | set(D.PLACES) | set(D.ACTIONS) | set(D.PRIORITIES)
                      | set(FUNCTION_WORDS) | {"reading"})
FLAVOURS = ("trained", "heldout", "random", "numbers")

_HELDOUT_MOD = 5  # one form signature in five is held out


@dataclass(frozen=True)
class Report:
    text: str
    form: str
    findings: tuple[str, ...] = ()  # "valve corrosion", "pump loose"
    actions: tuple[str, ...] = ()  # "replace bearing priority high"
    readings: tuple[str, ...] = ()  # "pressure forty two psi"


@dataclass
class _Build:
    words: list[str] = field(default_factory=list)
    form: list[str] = field(default_factory=list)
    heldout_part: bool = False

    def add(self, text: str, cls: str | None = None) -> str:
        self.words += text.split()
        self.form.append(cls or text)
        return text


def _pick(rng, seq):
    return seq[int(rng.integers(len(seq)))]


def _number(rng, dense: bool = False) -> str:
    if dense and rng.random() < 0.5:  # the confusable ones: teens, tens, nine/one, five/four
        n = int(_pick(rng, [13, 14, 15, 16, 17, 18, 19, 30, 40, 50, 60, 70, 80, 90, 1, 9, 4, 5, 19, 91, 99, 11, 12, 2, 3]))
    else:
        n = int(rng.integers(101))
    return D.NUMBER_WORDS[n]


def _component(b: _Build, rng, dense: bool) -> str:
    """A component phrase: [the] [place] component [number N | N]; returns the component word."""
    comp = _pick(rng, D.COMPONENTS)
    kind = int(rng.integers(6))
    if kind == 0:
        b.add("the"); b.add(_pick(rng, D.PLACES), "PLACE"); b.add(comp, "COMP")
    elif kind == 1:
        b.add(comp, "COMP"); b.add("number"); b.add(_number(rng, dense), "NUM")
    elif kind == 2:
        b.add(comp, "COMP"); b.add(_number(rng, dense), "NUM")
    elif kind == 3:
        b.add("the"); b.add(comp, "COMP")
    elif kind == 4:
        b.add(_pick(rng, D.PLACES), "PLACE"); b.add(comp, "COMP"); b.add(_number(rng, dense), "NUM")
    else:
        b.add("the"); b.add(comp, "COMP"); b.add("at"); b.add("the"); b.add(_pick(rng, D.PLACES), "PLACE")
    return comp


# Clause orders that only held-out forms use (a whole word order the model never hears in training).
_HELDOUT_ORDERS = {("finding", 3), ("state", 2), ("reading", 4), ("action", 3)}


def _finding(b: _Build, rng, dense: bool, facts: dict) -> None:
    order = int(rng.integers(5))
    b.heldout_part |= ("finding", order) in _HELDOUT_ORDERS
    cond = _pick(rng, D.CONDITIONS)
    if order == 0:
        comp = _component(b, rng, dense); b.add(_pick(rng, ["shows", "has"])); b.add(cond, "COND")
    elif order == 1:
        b.add("found"); b.add(cond, "COND"); b.add("on"); comp = _component(b, rng, dense)
    elif order == 2:
        b.add(cond, "COND"); b.add("found"); b.add(_pick(rng, ["on", "at"])); comp = _component(b, rng, dense)
    elif order == 3:
        b.add(cond, "COND"); b.add("on"); comp = _component(b, rng, dense)
    else:
        comp = _component(b, rng, dense); b.add(cond, "COND"); b.add("found")
    facts["findings"].append(f"{comp} {cond}")


def _state(b: _Build, rng, dense: bool, facts: dict) -> None:
    order = int(rng.integers(4))
    b.heldout_part |= ("state", order) in _HELDOUT_ORDERS
    state = _pick(rng, D.STATES)
    if order == 0:
        comp = _component(b, rng, dense); b.add("is"); b.add(state, "STATE")
    elif order == 1:
        b.add(_pick(rng, ["the", "a"])); b.add(state, "STATE"); comp = _pick(rng, D.COMPONENTS); b.add(comp, "COMP")
    elif order == 2:
        comp = _component(b, rng, dense); b.add(state, "STATE")
    else:
        b.add(state, "STATE"); b.add(_pick(rng, ["on", "at"])); comp = _component(b, rng, dense)
    if state != "normal" and state != "stable" and state != "clean" and state != "tight":
        facts["findings"].append(f"{comp} {state}")


def _reading(b: _Build, rng, dense: bool, facts: dict) -> None:
    order = int(rng.integers(6))
    b.heldout_part |= ("reading", order) in _HELDOUT_ORDERS
    qty, unit = _pick(rng, D.QUANTITIES), _pick(rng, D.UNITS)
    n = _number(rng, dense)
    if order == 0:
        b.add(qty, "QTY"); b.add("is"); b.add(n, "NUM"); b.add(unit, "UNIT"); b.add("at"); _component(b, rng, dense)
    elif order == 1:
        b.add(qty, "QTY"); b.add("of"); _component(b, rng, dense); b.add("is"); b.add(n, "NUM"); b.add(unit, "UNIT")
    elif order == 2:
        qty = "reading"; b.add("reading"); b.add(n, "NUM"); b.add(unit, "UNIT"); b.add("on"); _component(b, rng, dense)
    elif order == 3:
        _component(b, rng, dense); b.add(qty, "QTY"); b.add(n, "NUM"); b.add(unit, "UNIT")
    elif order == 4:
        b.add(n, "NUM"); b.add(unit, "UNIT"); b.add(_pick(rng, ["on", "at"])); _component(b, rng, dense)
        qty = "reading"
    else:
        b.add(qty, "QTY"); b.add("is"); b.add(n, "NUM"); b.add(unit, "UNIT")
    facts["readings"].append(f"{qty} {n} {unit}")
    if dense and rng.random() < 0.5:  # a second value in the same breath
        n2, unit2 = _number(rng, dense), _pick(rng, D.UNITS)
        b.add("and"); b.add(n2, "NUM"); b.add(unit2, "UNIT")
        facts["readings"].append(f"{qty} {n2} {unit2}")


def _action(b: _Build, rng, dense: bool, facts: dict) -> None:
    order = int(rng.integers(4))
    b.heldout_part |= ("action", order) in _HELDOUT_ORDERS
    act = _pick(rng, D.ACTIONS)
    b.add(act, "ACT")
    if order == 0:
        comp = _component(b, rng, dense)
    elif order == 1:
        b.add("the"); b.add(_pick(rng, D.STATES), "STATE"); comp = _pick(rng, D.COMPONENTS); b.add(comp, "COMP")
    elif order == 2:
        comp = _pick(rng, D.COMPONENTS); b.add(comp, "COMP"); b.add(_number(rng, dense), "NUM")
    else:
        b.add("the"); comp = _pick(rng, D.COMPONENTS); b.add(comp, "COMP"); b.add("at"); b.add("the")
        b.add(_pick(rng, D.PLACES), "PLACE"); b.add(_pick(rng, D.COMPONENTS), "COMP")
    fact = f"{act} {comp}"
    if rng.random() < 0.45:
        prio = _pick(rng, D.PRIORITIES)
        if rng.random() < 0.8:
            b.add("priority"); b.add(prio, "PRIO")
        else:
            b.add(prio, "PRIO"); b.add("priority")
        fact += f" priority {prio}"
    facts["actions"].append(fact)


_CLAUSES = (_finding, _state, _reading, _action)


def is_heldout_form(form: str) -> bool:
    return zlib.crc32(form.encode()) % _HELDOUT_MOD == 0


def _draw(rng: np.random.Generator, dense: bool) -> tuple[Report, bool]:
    b = _Build()
    facts: dict[str, list[str]] = {"findings": [], "actions": [], "readings": []}
    n_clauses = 1 if rng.random() < 0.6 else 2
    for k in range(n_clauses):
        if k:
            joint = rng.random()
            if joint < 0.7:
                b.add("and")
            elif joint < 0.85:
                b.add("it")  # "... it shows corrosion" / "... it is loose"
        clause = _reading if dense and rng.random() < 0.7 else _pick(rng, _CLAUSES)
        clause(b, rng, dense, facts)
    form = " ".join(b.form)
    rep = Report(" ".join(b.words), form, tuple(facts["findings"]), tuple(facts["actions"]), tuple(facts["readings"]))
    return rep, b.heldout_part or is_heldout_form(form)


def report(rng: np.random.Generator, forms: str = "trained", dense: bool = False) -> Report:
    """A report of trained forms (``forms="trained"``) or of held-out forms (``"heldout"``): drawn
    until the form is of the kind asked (about one in three draws is held out)."""
    if forms not in ("trained", "heldout"):
        raise ValueError(f"forms must be 'trained' or 'heldout', not {forms!r}")
    for _ in range(1000):
        rep, heldout = _draw(rng, dense)
        if heldout == (forms == "heldout") and 3 <= len(rep.text.split()) <= 14:
            return rep
    raise RuntimeError("no report of the kind asked in 1000 draws")


def random_string(rng: np.random.Generator, low: int = 3, high: int = 10) -> Report:
    """Vocabulary words in no grammatical order (numbers as words count as one draw)."""
    n = int(rng.integers(low, high + 1))
    words = []
    for _ in range(n):
        words.append(_number(rng) if rng.random() < 0.2 else _pick(rng, SPOKEN_WORDS))
    text = " ".join(words)
    return Report(text, "RANDOM")


def utterance_text(rng: np.random.Generator, flavour: str) -> Report:
    """``trained`` | ``heldout`` | ``random`` | ``numbers`` (number-dense trained forms)."""
    if flavour == "random":
        return random_string(rng)
    if flavour == "numbers":
        return report(rng, "trained", dense=True)
    return report(rng, flavour)


# -- the documented questions (exported into onepass.json; ``--ask`` outside them is refused) ------
# key -> (wording, unit): asked of each speech region (``speech``) or each kept frame (``frame``).
QUESTIONS = {
    "findings": ("which components show a condition", "speech"),
    "actions": ("what needs attention", "speech"),
    "readings": ("what readings were taken", "speech"),
    "shapes": ("which shapes are visible", "frame"),
}
NONE = "none"


def answer(rep: Report | None, key: str) -> str:
    """The truth for a speech question: the report's facts joined by "and", or "none" (also for
    speech outside the domain and for vocabulary in no order, which reports nothing)."""
    facts = {"findings": rep.findings, "actions": rep.actions, "readings": rep.readings}[key] if rep else ()
    return " and ".join(facts) if facts else NONE


def scene_answer(scene) -> str:
    """The truth for "which shapes are visible": colour and shape of each, left/upper first."""
    return caption_answer(scene.caption) if scene is not None else NONE


def caption_answer(caption: str) -> str:
    """The same from a domain caption ("a small red circle", "red circle left of blue square")."""
    words = caption.split()
    if words[0] == "a":
        return " ".join(words[-2:])
    second = 3 if words[2] == "above" else 4
    return f"{words[0]} {words[1]} and {words[second]} {words[second + 1]}"
