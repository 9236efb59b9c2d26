"""How the simulated model reads a tool call's argument values from the conversation, as a
tool-calling LLM does: never from the scenario's gold steps.

Values come from what was said: enum values named in it (plurals too), values shaped
like the example a parameter's description gives ("such as '#W0000000'", "E.g., '2 weeks'"),
options a description quotes, emails, numbers, names, dates written out or in ISO form,
one-line postal addresses and listed values, each matched to the parameter whose words stand
nearest it in the value's own clause (values named for a parameter placed first); of a value
said twice, the latest mention counts. A number goes only where it can belong (an integer is
whole, a probability lies in [0, 1]). A conversion ("how many ounces in 2 pounds of
butter", "150 Euros to Canadian dollars") gives from_*/to_* parameters their side (a unit in
the singular) and names what is measured; a flag is set when its words, or their family
("standardization"), are said. A request the user repeats ("... Again: <request>") is read for
itself, not with the words around it. Optional parameters are given when the conversation
names a value for them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

STOPWORDS = frozenset(
    "a an and are as at be by can could do for from has have i i'm im in is it its me my of on or our please "
    "so that the this to was we with you your would like want need some there their them then than also just".split()
)
_WORD = re.compile(r"[A-Za-z]+|\d+")
_EXAMPLE = re.compile(r"(?:such as|e\.g\.|for example|like)\s*[:,]?\s*'([^']+)'((?:\s*(?:,|or)\s*'[^']+')*)", re.IGNORECASE)
_QUOTED = re.compile(r"'([^']+)'")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_NUMBER = re.compile(r"(?<![\w#.-])-?\d+(?:\.\d+)?(?![\w-])")
_NAME = re.compile(r"(?:I'm|I am|name is|This is|it's|from)\s+([A-Z][a-z]+)\s+([A-Z][a-z]+)")
_REPLACEMENT = re.compile(r"\b(?:for|into|to|new|with)\b[^.;:]*$", re.IGNORECASE)
_KEY_VALUE = re.compile(r"\b(\w+)\s*=\s*(\"[^\"]*\"|'[^']*'|[^\s,;]+)")


def words(text: str, *, stopwords: frozenset[str] = STOPWORDS) -> list[str]:
    """Lower-case word stems, snake_case and camelCase split, stop words dropped."""
    spaced = re.sub(r"([a-z])([A-Z])", r"\1 \2", text)
    out = []
    for token in _WORD.findall(spaced):
        token = token.lower()
        if token in stopwords or len(token) < 2:
            continue
        for suffix in ("ing", "ed", "es", "s"):
            if len(token) > len(suffix) + 3 and token.endswith(suffix):
                token = token[: -len(suffix)]
                break
        out.append(token)
    return out


def shape_pattern(example: str) -> str:
    """A regex for values shaped like `example`: digits and letter runs generalised, punctuation kept."""
    if re.fullmatch(r"(?=.*\d)(?=.*[A-Z])[A-Z\d]{5,}", example):  # a code such as 'ZFA04Y': any of that length
        return rf"[A-Z\d]{{{len(example)}}}"
    if re.fullmatch(r"[A-Z]{2,3}", example):  # a code such as 'CA' or 'JFK'
        return rf"[A-Z]{{{len(example)}}}"
    parts = []
    for run in re.findall(r"\d+|[A-Z][a-z]+|[a-z]+(?:_[a-z]+)*|[A-Z]+|[^A-Za-z\d]", example):
        if run.isdigit():
            parts.append(rf"\d{{{len(run)}}}" if len(run) >= 5 else r"\d+")
        elif run.isalpha() and run.isupper():  # 'PR' in 'PR-1234', 'W' in '#W0000000': kept; longer runs: any
            parts.append(re.escape(run) if len(run) <= 2 else rf"[A-Z]{{{len(run)}}}")
        elif run[0].isupper():  # a capitalised word: any ('Main St' is '953 Park Avenue' too)
            parts.append(r"[A-Z][a-z]+")
        elif run[0].islower():  # a word chain such as gift_card or ravi.kapoor: any chain of that kind
            parts.append(r"[a-z]+(?:[._][a-z]+)*")
        else:
            parts.append(re.escape(run))
    return "".join(parts)


def parameter_examples(spec: dict[str, Any]) -> list[str]:
    """The example values a parameter's description gives ("such as 'A-1000'"), or its items'."""
    for description in (spec.get("description", ""), (spec.get("items") or {}).get("description", "")):
        found = []
        for match in _EXAMPLE.finditer(description):
            found.append(match.group(1))
            found.extend(_QUOTED.findall(match.group(2) or ""))
        if found:
            return found
    return []


@dataclass
class _Candidate:
    value: Any
    start: int
    from_user: bool  # said by the user, rather than read from a tool's result
    latest: bool  # said in the user's latest message
    before: list[str]  # the words just before it: what it was called
    after: list[str]  # the words just after it ("14 days", "the release/2.14 branch")
    replacement: bool  # introduced as the new one ("... for item 1323134954", "change it to ...")


class Conversation:
    """Where argument values can come from: what the user said, then what tools returned."""

    def __init__(self, said: str, results: str, latest: str = "") -> None:
        self.text = said + "\n\n" + results
        self.boundary = len(said)
        self.latest_from = len(said) - len(latest) if latest and said.endswith(latest) else len(said)

    def candidates(self, pattern: str) -> list[_Candidate]:
        found = []
        # whole tokens only: not 'feature/plan' out of 'feature/plan-proration'
        for match in re.finditer(rf"(?<![\w#@])(?<!\w[./-]){pattern}(?![\w]|[./-]\w)", self.text):
            preceding = self.text[max(0, match.start() - 40) : match.start()]
            following = re.split(r"[,;:.!?(]", self.text[match.end() : match.end() + 30], maxsplit=1)[0]
            replacement = bool(_REPLACEMENT.search(preceding[-18:]))
            found.append(_Candidate(match.group(0), match.start(), match.start() < self.boundary,
                                    self.latest_from <= match.start() < self.boundary,
                                    words(re.split(r"[,;:.!?]\s", preceding)[-1], stopwords=frozenset())[-4:],
                                    words(following, stopwords=frozenset())[:2], replacement))
        return found


def _in_family(word: str, label: set[str]) -> bool:
    """The same word, or one of its family ("bin", "bins"; "review", "reviewers"; "standardize", "standardization")."""
    return (word in label or word + "s" in label or word.removesuffix("s") in label
            or (len(word) >= 5 and any(w[:5] == word[:5] for w in label if len(w) >= 5)))


# What a count counts, as statistics words it: "8 tosses", "a coin flipped 100 times" are trials.
COUNT_WORDS = {"toss": "trial", "flip": "trial", "roll": "trial", "draw": "trial", "time": "trial", "attempt": "trial"}


def _label(name: str, spec: dict[str, Any]) -> set[str]:
    """The words a parameter goes by: its name's and its description's first few, and what they count."""
    label = set(words(name, stopwords=frozenset())) | set(words(spec.get("description", ""))[:6])
    return label | {word for word, counted in COUNT_WORDS.items() if counted in label}


def _closeness(name: str, spec: dict[str, Any], candidate: _Candidate, renaming: bool) -> float:
    label = _label(name, spec)
    near = sum(1.0 / (1 + distance) for distance, word in enumerate(reversed(candidate.before)) if _in_family(word, label))
    near += sum(0.5 / (1 + distance) for distance, word in enumerate(candidate.after) if _in_family(word, label))
    if candidate.replacement and renaming:  # "X for Y": Y belongs to the new_* parameter, X to the other
        near += 1.0 if "new" in label else -0.5
    return near


def _rank(name: str, spec: dict[str, Any], candidate: _Candidate, renaming: bool) -> tuple[bool, float, bool, int]:
    """What the user just said first; then nearest words; then the user over tool results; then the first said.
    `renaming`: the schema has a new_* parameter, so "for"/"to" before a value marks it as the new one."""
    return (candidate.latest, _closeness(name, spec, candidate, renaming), candidate.from_user, -candidate.start)


def fill_arguments(schema: dict[str, Any], said: str, results: str = "", latest: str = "",
                   tool_name: str = "", missing: set[str] = frozenset()) -> dict[str, Any]:
    """Values for the schema's parameters, read from the conversation.

    Required parameters are always filled (with a guess when nothing fits, as models do);
    optional ones only when the conversation names a value for them, as a model adds
    `state: "open"` when the user asked for open pull requests. `missing` are parameters an
    error said were missing: filled as if required.
    """
    conversation = Conversation(said, results, latest)
    properties: dict[str, dict[str, Any]] = schema.get("properties") or {}
    required = set(schema.get("required") or list(properties)[:1]) | set(missing)

    given = {k: v.strip("\"'") for k, v in _KEY_VALUE.findall(conversation.text)}
    if "city" in properties:  # an address said on one line goes to the address fields, as a reader parses it:
        # the one just said, else the last one said (a later request may need an address given earlier)
        given = {**(_address_fields(latest, properties) or _address_fields(said, properties)), **given}
    arguments: dict[str, Any] = {}
    claims: dict[tuple[str, bool], list[tuple[tuple[bool, float, bool, int], str, _Candidate]]] = {}
    number_candidates = conversation.candidates(_NUMBER.pattern)
    renaming = any("new" in _label(name, spec) for name, spec in properties.items())

    def claim(name: str, spec: dict[str, Any], candidate: _Candidate) -> None:
        # keyed by the value and, where the schema renames, by its side: "item 3076708684 for item
        # 3076708684 (same options)" gives the value to both item_ids and new_item_ids
        key = (candidate.value, renaming and candidate.replacement)
        claims.setdefault(key, []).append((_rank(name, spec, candidate, renaming), name, candidate))

    conversion = _conversion(latest or said)
    name_match = _NAME.search(said) or _NAME.search(results)
    entities = iter(_entities(latest or said))
    number_lists = iter(_number_lists(latest or said))
    for name, spec in properties.items():
        kind = spec.get("type", "string")
        items = spec.get("items") or {}
        examples = parameter_examples(spec)
        options = spec.get("enum") or items.get("enum")
        # options a description quotes ("Can be 'list' ... or 'dictionary' ..."), taken when the user names one
        quoted = [] if options else [q for q in _QUOTED.findall(spec.get("description", "")) if re.fullmatch(r"[\w.-]+", q)]
        side = conversion.get(_side(name))
        if name in given:
            arguments[name] = _typed(given[name], kind)
        elif side and kind == "string" and not examples and (
                value := _side_value(side, name, options or (quoted if len(quoted) >= 2 else []))):
            arguments[name] = value
        elif options:
            named = _enum_named(options, (latest, said, results), set(words(tool_name)))
            if named or name in required:
                value = named[0] if named else _enum_guess(options, said)
                arguments[name] = (named or [value]) if kind == "array" else value
        elif len(quoted) >= 2 and (named := _enum_named(quoted, (latest, said), set(words(tool_name)))):
            arguments[name] = named if kind == "array" else named[0]
        elif "email" in name:
            emails = _EMAIL.findall(said) or _EMAIL.findall(results)
            if emails or name in required:
                arguments[name] = (emails if kind == "array" else emails[-1]) if emails else "unknown@example.com"
        elif name_match and name in ("first_name", "last_name", "firstname", "lastname"):
            arguments[name] = name_match.group(1 if name.startswith("first") else 2)
        elif examples:
            pattern = "|".join(f"(?:{shape_pattern(e)})" for e in examples)
            for candidate in conversation.candidates(f"(?:{pattern})"):
                claim(name, spec, candidate)
        elif kind == "string" and "date" in words(name):  # a date said, in words or ISO form, like a shaped value
            for candidate in conversation.candidates(_DATE):
                claim(name, spec, candidate)
        elif kind in ("integer", "number"):  # numbers go out like shaped values: by the words around them
            fitting = [c for c in number_candidates if _fits(c.value, name, kind)]
            for candidate in fitting:
                claim(name, spec, candidate)
            if name in required and not fitting:
                arguments[name] = 1
        elif kind == "boolean":  # "standardize the predictors", "apply standardization", "assume equal variance"
            said_words = set(words(latest or said))
            if name in required or all(_in_family(word, said_words) for word in words(name)):
                arguments[name] = True
        elif name not in required:
            continue
        elif kind == "array" and items.get("type") in ("integer", "number"):
            arguments[name] = [_typed(v, items["type"]) for v in next(number_lists, [])]
        elif kind == "array":  # names said, for a list of strings; nothing it can read, for others
            arguments[name] = list(entities) if items.get("type", "string") == "string" else []
        elif kind == "object":
            arguments[name] = {}
        else:  # what a quantity measures ("2 pounds of butter"), a name said, or the request itself
            arguments[name] = conversion.get("what") or next(entities, None) or _free_text(said, latest)
    _assign_shaped(claims, properties, required, arguments)
    for name in required:  # nothing in the conversation fits: like real models, fall back on the example
        if name not in arguments:
            spec = properties.get(name) or {}
            examples = parameter_examples(spec)
            value = examples[0] if examples else ""
            arguments[name] = [value] if spec.get("type") == "array" else value
    # in the schema's order, as models write them: the order the sets above were walked in varies
    # with the process's hash seed, and a conversation that echoes it would seed later draws apart
    order = {name: i for i, name in enumerate(properties)}
    return dict(sorted(arguments.items(), key=lambda item: order.get(item[0], len(order))))


_ADDRESS = re.compile(r"(?<![\w#])(\d+ [A-Z][^,.;]*?), (?:([^,]*\d[^,]*), )?([A-Z][A-Za-z .'-]+), ([A-Z]{2}), ([A-Z][A-Za-z .]+), (\d{5}(?:-\d{4})?)")
ADDRESS_FIELDS = (("address1", "address_line1", "street"), ("address2", "address_line2"), ("city",), ("state",),
                  ("country",), ("zip", "zip_code", "postal_code"))


def _address_fields(text: str, properties: dict[str, Any]) -> dict[str, str]:
    """The last one-line postal address in `text` ("953 Park Avenue, Suite 613, New York, NY, USA,
    10064"), as the schema's address parameters name its parts."""
    found = list(_ADDRESS.finditer(text))
    if not found:
        return {}
    parts = found[-1].groups()
    return {name: parts[i] or "" for i, names in enumerate(ADDRESS_FIELDS) for name in names if name in properties}


def _assign_shaped(claims: dict[tuple[str, bool], list[tuple[tuple[bool, float, bool, int], str, _Candidate]]],
                   properties: dict[str, dict[str, Any]], required: set[str], arguments: dict[str, Any]) -> None:
    """Each shaped value goes to the parameter whose words stand nearest it; each parameter takes its best.

    A required parameter that no value went to takes its best claim all the same; an optional one
    takes only a value it won by the words around it, or one just said that only it could take.
    """
    won: dict[str, list[tuple[tuple[bool, float, bool, int], _Candidate]]] = {}
    # values named for a parameter first, the nearest first ("60 heads ... 100 times": the 100 is the trials'
    # whatever was said before it); the rest as said
    for options in sorted(claims.values(), key=lambda options: (-max(max(o[0][1] for o in options), 0.0),
                                                                min(o[2].start for o in options))):
        # per parameter: the value's best-placed mention (just said, then nearest words), and its nearest words anywhere
        best: dict[str, tuple[tuple[bool, float, bool, int], _Candidate]] = {}
        near: dict[str, float] = {}
        for rank, name, candidate in options:
            if name not in best or rank > best[name][0]:
                best[name] = (rank, candidate)
            near[name] = max(near.get(name, 0.0), rank[1])
        # a parameter with no value yet first, unless it takes a list ("coefficients 2, 3 and -4": a, b, c);
        # then the nearest words
        name = max(best, key=lambda n: (n in required or near[n] > 0,
                                        n not in won or (properties.get(n) or {}).get("type") == "array",
                                        near[n], -list(properties).index(n)))
        # an optional parameter takes a value named for it, or one just said that nothing else could take
        if name in required or near[name] > 0 or (best[name][1].latest and len(best) == 1):
            won.setdefault(name, []).append(best[name])
    taken = {id(c) for pairs in won.values() for _, c in pairs}
    for name in {name for options in claims.values() for _, name, _ in options}:
        mine = won.get(name)
        if not mine and name in required:  # its best claim, on a value no other parameter took if there is one
            mine = [(rank, c) for options in claims.values() for rank, n, c in options if n == name]
            mine = [pair for pair in mine if id(pair[1]) not in taken] or mine
        if not mine:
            continue
        kind = (properties.get(name) or {}).get("type", "string")
        if kind == "array":  # every value it won: from what the user just said if any, else all they said
            said = ([c for _, c in mine if c.latest] or [c for _, c in mine if c.from_user]
                    or [c for _, c in mine])
            arguments[name] = list(dict.fromkeys(c.value for c in sorted(said, key=lambda c: c.start)))
        else:
            arguments[name] = _typed(max(mine, key=lambda pair: pair[0])[1].value, kind)


def _enum_named(options: list[Any], texts: tuple[str, ...], tool_words: set[str]) -> list[Any]:
    """The options named in the first of `texts` that names any (what the user just said, then
    all they said, then tool results), in the plural too ("teaspoons"); an option that is only
    the tool's own verb ("merge" in "squash and merge") comes after a more specific one."""
    for text in texts:
        found = [(o in tool_words if isinstance(o, str) else False, m.start(), o) for o in options
                 if (m := re.search(rf"(?<![\w-]){re.escape(str(o))}(?:e?s)?(?![\w-])", text, re.IGNORECASE))]
        if found:
            return [o for _, _, o in sorted(found, key=lambda f: (f[0], f[1]))]
    return []


def _enum_guess(options: list[Any], said: str) -> Any:
    context_words = set(words(said))
    return max(options, key=lambda o: len(set(words(str(o))) & context_words))


_DATE_WORDS = r"(?:January|February|March|April|May|June|July|August|September|October|November|December)\s+\d{1,2}(?:st|nd|rd|th)?,?\s+\d{4}"
_ENTITY = re.compile(rf"\b(?:{_DATE_WORDS}|(?:[A-Z][a-z]+|[A-Z]{{2,}})(?:\s+(?:[A-Z][a-z]+|[A-Z]{{2,}}))*)\b")
_NUMBER_LIST = re.compile(r"-?\d+(?:\.\d+)?(?:\s*,\s*(?:and\s+)?-?\d+(?:\.\d+)?){2,}")


def _entities(text: str) -> list[str]:
    """Names in what the user said ("Apple and Microsoft", "British Pounds"), not a sentence's first word."""
    found = []
    for match in _ENTITY.finditer(text):
        value, start = match.group(0), match.start()
        if start == 0 or re.search(r"[.!?:]\s*$", text[:start]):
            value = value.partition(" ")[2] if not value.split()[0].isupper() else value
        if value and value.lower() not in STOPWORDS:
            found.append(value)
    return found


_DATE = rf"{_DATE_WORDS}|\d{{4}}-\d{{2}}-\d{{2}}"
_LINK = r"(?:to|in|into|of|at|for|on|from|are|is|and|with|by|per|the|a|an)\b"
# a measure or currency: a word or two, neither a linking word ("Canadian dollars", not "pounds of")
_PHRASE = rf"(?!{_LINK})[A-Za-z]+(?:\s+(?!{_LINK})[A-Za-z]+)?"
_QUANTITY = r"(?<![\w.#-])\d+(?:\.\d+)?\s*"
_CONVERSIONS = (
    re.compile(rf"\bfrom\s+(?P<source>{_PHRASE})\s+(?:to|into)\s+(?P<target>{_PHRASE})", re.IGNORECASE),
    re.compile(rf"{_QUANTITY}(?P<source>{_PHRASE})(?:\s+of\s+(?P<what>{_PHRASE}))?\s+(?:to|into|in)\s+"
               rf"(?P<target>{_PHRASE})", re.IGNORECASE),
    re.compile(rf"\bhow many\s+(?P<target>{_PHRASE})\s+(?:are\s+|is\s+)?(?:in|for)\s+{_QUANTITY}"
               rf"(?P<source>{_PHRASE})(?:\s+of\s+(?P<what>{_PHRASE}))?", re.IGNORECASE),
)
SIDES = {"from": "source", "source": "source", "to": "target", "target": "target"}  # first word of a from_/to_ name


def _conversion(text: str) -> dict[str, str]:
    """What a conversion request converts: "from Euro to Dollar", "150 Euros to Canadian dollars",
    "how many ounces in 2 pounds of butter" give the source, the target and what is measured."""
    for pattern in _CONVERSIONS:
        if match := pattern.search(text):
            return {k: v for k, v in match.groupdict().items() if v}
    return {}


def _side(name: str) -> str | None:
    """"source" for from_unit or source_currency, "target" for to_unit or target_currency, else None."""
    parts = words(name, stopwords=frozenset())
    return SIDES.get(parts[0]) if len(parts) > 1 else None


def _side_value(phrase: str, name: str, options: list[Any]) -> Any:
    """One side of a conversion for a parameter: the option it names, else the phrase (a unit in
    the singular, as unit parameters name them: 'pound' from "2 pounds")."""
    if options:
        return next(iter(_enum_named(options, (phrase,), set())), None)
    return _singular(phrase) if "unit" in words(name) else phrase


def _singular(noun: str) -> str:
    """'pound' from 'pounds', 'inch' from 'inches': how unit parameters name units."""
    if re.search(r"(?:ch|sh|s|x)es$", noun):
        return noun[:-2]
    return noun[:-1] if noun.endswith("s") and not noun.endswith("ss") else noun


def _fits(value: str, name: str, kind: str) -> bool:
    """Whether a number can be the parameter's, as a reader knows: an integer is whole, a probability in [0, 1]."""
    number = float(value)
    if kind == "integer" and not number.is_integer():
        return False
    return 0 <= number <= 1 if any(word.startswith("prob") for word in words(name)) else True


def _number_lists(text: str) -> list[list[str]]:
    """Runs of numbers the user listed ("[22, 33, 42]", "85, 90, 88 and 92"), in order."""
    return [re.findall(r"-?\d+(?:\.\d+)?", m.group(0)) for m in _NUMBER_LIST.finditer(text)]


def _free_text(said: str, latest: str) -> str:
    """A free-text value: what the user quoted, else their latest line."""
    source = latest or said
    quoted = re.findall(r"'([^']{3,})'|\"([^\"]{3,})\"", source)
    if quoted:
        return next(q for q in quoted[-1] if q)
    return source.strip().splitlines()[-1][:120] if source.strip() else ""


def _typed(value: str, kind: str) -> Any:
    try:
        if kind == "integer":
            return int(float(value))
        if kind == "number":
            return float(value)
    except ValueError:
        return value
    if kind == "boolean":
        return value.lower() in ("true", "yes", "1")
    return value
