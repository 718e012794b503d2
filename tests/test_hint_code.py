"""Hints leave the learning to the learner: no code at hint levels 1–2 or in per-test hints,
and not the whole answer at level 3.

Level 1 is a nudge, level 2 the concept, level 3 the steps and the API names; a per-test hint
is shown for any failure of its test (and by `lora-kata hint NN`), so it names what to look at,
never the line to write. Statically, over lora_kata/catalog/*.toml, in both languages:

- levels 1–2 and per-test hints: no assignment to a code name (`x.y = …`, `name[…] = …`,
  `a += …`, `snake_case = …`), no call with arguments (`name(arg)`, `obj.method(arg)`), no
  Python-only operator (`@`, `//`, `**`) and no arithmetic between code names (`alpha / r`,
  `lora_B * s`). Maths in the lessons' notation is fine: single letters and Greek (`s = α/r`,
  `B = 0`, `ΔW`, `B·A`), and so are API names without arguments (`torch.cat`, `.detach()`).
- level 3: the steps and the API names, so a call with its arguments is fine, but not a
  statement of the answer: no assignment from a computed value, no `return`, no lambda, no
  chained or indexed call result (`f(x).g(y)`, `f(x)[i]`).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

CATALOG = Path(__file__).resolve().parent.parent / "lora_kata" / "catalog"
LANGS = ("en", "zh")

# A code name: an ASCII identifier longer than one letter (one letter is maths), or a dotted
# name. Greek letters, ΔW, B·A and α/r are the lessons' maths and never match.
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_NAME = rf"(?:{_IDENT}\.)*{_IDENT}"
_CODE_NAME = rf"(?:(?:{_IDENT}\.)+{_IDENT}|[A-Za-z_][A-Za-z0-9_]+)"
_CODE_VALUE = rf"(?:{_IDENT}\.{_IDENT}|{_NAME}\(|{_NAME}\s*(?:@|//|\*\*|[-+*/])\s*{_NAME})"

# Calls that are the lessons' notation, not code: `base(x)` is h = W0·x + ΔW·x written per layer,
# `Linear(k → d)` names a shape. Words that read as prose next to a spaced operator.
ALLOWED_CALLS = {"Linear", "base", "dropout", "softmax", "exp", "log", "max", "min", "sqrt"}
ALLOWED_WORDS = {"and", "or", "not", "is", "of", "to", "the", "an", "vs", "per", "than"}

CHECKS_LOW = {
    # `x.y = …`, `x[i] = …`, `x += …`, or a name given a computed value (`w = self.f()`);
    # a setting written `name=value` (a keyword argument) or `r = 16` (a number) is not one.
    "an assignment": re.compile(
        rf"(?<![\w.=!<>])(?:{_NAME}(?:\.{_IDENT}|\[[^\]]*\])+\s+=|{_NAME}\s*(?:\+|-|\*|/|@)=|{_CODE_NAME}\s+=\s+{_CODE_VALUE})(?!=)"
    ),
    "a call with arguments": re.compile(rf"(?<![\w.])({_NAME})\((?!\s*\))"),
    "a Python operator": re.compile(r"(?:\w|\))\s*(?:@|//|\*\*)\s*(?:\w|\()"),
    # spaced, so that prose (micro-batches, lora_A/lora_B, train/eval) is left alone
    "arithmetic between code names": re.compile(
        rf"(?<![\w.])({_NAME})\s+[-+*/]\s+({_NAME})(?![\w(])"
    ),
}

CHECKS_TOP = {
    # a statement (spaces around `=`), not a keyword argument (`a=math.sqrt(5)`)
    "an assignment from a computed value": re.compile(
        rf"(?<![\w.=!<>]){_NAME}(?:\[[^\]]*\])?\s+(?:[-+*/@]?=)\s+{_CODE_VALUE}"
    ),
    # "return the model" is prose; "return result + update", "return self.x" are code
    "a return statement": re.compile(
        r"(?<!\w)return\s+(?:\w+(?:\.\w|[(\[])|\w+\s*[-+*/@]\s*\w|\()"
    ),
    "a lambda": re.compile(r"(?<!\w)lambda\b[^:]*:"),
    # `super().__init__()` is how a step names the parent's constructor
    "a chained or indexed call result": re.compile(r"\w(?<!super)\([^()]*\)(?:\.\w+\(|\[)"),
}


def _is_allowed_call(match: re.Match) -> bool:
    name = match.group(1)
    return name.split(".")[-1] in ALLOWED_CALLS or len(name) == 1


_MATHS = re.compile(r"[A-Za-z][0-9]*")  # a letter, maybe with an index: k, r, W0


def _is_allowed_arithmetic(match: re.Match) -> bool:
    left, right = match.group(1), match.group(2)
    if left.lower() in ALLOWED_WORDS or right.lower() in ALLOWED_WORDS:
        return True
    return bool(_MATHS.fullmatch(left) and _MATHS.fullmatch(right))  # k + d, W0 + s: maths


def code_in(text: str, level: str) -> list[str]:
    """What reads as code in a hint of `level` ("1", "2", "3" or "test"): 'kind: fragment'."""
    found = []
    checks = CHECKS_TOP if level == "3" else CHECKS_LOW
    for kind, pattern in checks.items():
        for match in pattern.finditer(text):
            if kind == "a call with arguments" and _is_allowed_call(match):
                continue
            if kind == "arithmetic between code names" and _is_allowed_arithmetic(match):
                continue
            found.append(f"{kind}: {match.group(0).strip()!r}")
    return found


def hints() -> list[tuple[str, str, str, str]]:
    """(file, level, lang, text) for every hint in the catalogue."""
    found = []
    for path in sorted(CATALOG.glob("*.toml")):
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        for level, tier in enumerate(data.get("hints", ()), 1):
            for lang in LANGS:
                found.append((path.name, str(level), lang, tier.get(lang, "")))
        for test, texts in data.get("tests", {}).items():
            for lang in LANGS:
                found.append((path.name, f"test {test}", lang, texts.get(lang, "")))
    return found


@pytest.mark.parametrize(
    ("text", "level", "kind"),
    [
        ("ΔW = self.scaling * (self.lora_B @ self.lora_A)", "1", "a Python operator"),
        ("weight = self.delta_weight()", "2", "an assignment"),
        ("labels[attention_mask == 0] = -100", "test", "an assignment"),
        ("weight += self.delta_weight()", "2", "an assignment"),
        ("register_forward_hook(lambda m, a, out: out.float())", "test", "a call with"),
        ("x @ A.T", "2", "a Python operator"),
        ("alpha // r", "test", "a Python operator"),
        ("the scaling is alpha / r", "1", "arithmetic between code names"),
        ("codes = nf4_code()[codes.long()]", "3", "an assignment from a computed value"),
        ("mask = torch.tril(ones)", "3", "an assignment from a computed value"),
        ("return result + update", "3", "a return statement"),
        ("LambdaLR(opt, lambda step: step / warmup)", "3", "a lambda"),
        ("torch.full(shape, v).triu(1)", "3", "a chained or indexed call result"),
    ],
)
def test_the_check_flags_code(text, level, kind):
    found = code_in(text, level)
    assert any(f.startswith(kind) for f in found), (
        f"{text!r} at level {level} should be flagged as {kind!r}; found {found}"
    )


@pytest.mark.parametrize(
    ("text", "level"),
    [
        ("The scaling is α/r: a larger rank gets a smaller factor.", "1"),
        ("At init B = 0, so ΔW = B·A = 0 and the output is base(x).", "test"),
        ("For a Linear(k → d), A has shape (r, k).", "2"),
        ("Use torch.cat, .detach() or torch.no_grad: which one cuts the graph?", "test"),
        ("r = 16 and lora_alpha = 32 give s = 2 (true division, never floor division).", "2"),
        ("Fill lora_A with nn.init.kaiming_uniform_ and a=math.sqrt(5).", "3"),
        ("4. nn.Dropout(dropout), or nn.Identity() when dropout == 0.", "3"),
        ("loss (a float, the mean over micro-batches) is returned", "test"),
        ("W0 + s·B·A has the shape of W0, and k + d values per rank", "2"),
    ],
)
def test_the_check_accepts_prose_maths_and_api_names(text, level):
    assert not code_in(text, level), (
        f"{text!r} at level {level} is not code: {code_in(text, level)}"
    )


def test_the_catalogue_has_hints_to_check():
    assert len(hints()) > 100, f"expected the catalogue's hints, found {len(hints())}"


@pytest.mark.parametrize("name", sorted(p.name for p in CATALOG.glob("*.toml")))
def test_hints_give_no_code_below_level_three_and_not_the_answer_at_it(name):
    problems = [
        f"  {level} [{lang}]: {finding}"
        for file, level, lang, text in hints()
        if file == name
        for finding in code_in(text, level)
    ]
    assert not problems, (
        f"{name}: hints that hand over code (levels 1–2 and per-test hints: a nudge or the "
        "concept, in words or the lessons' maths; level 3: the steps and API names, not the "
        "statements of the answer):\n" + "\n".join(problems)
    )
