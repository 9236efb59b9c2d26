"""The simulated upstream model: an imperfect tool-calling LLM, so that learning results mean something.

It sees what a real model sees, the request: the conversation and the offered tools. It never
sees the scenario's gold steps or the planner. Its behaviour:

- Tool choice: each offered tool is scored by lexical similarity (TF-IDF over the offered
  tools) between the current request (the latest user message, and the tool results since)
  and the tool's name, description and parameter names; a tool is sampled from those scores
  with Gumbel noise. The noise's temperature grows with the number of offered tools
  (`crowding`), and near-duplicate tools score alike, so more and more similar tools mean
  more wrong choices, as measured for real models (RAG-MCP, arXiv 2505.03275; MetaTool,
  arXiv 2310.03128). A tool already called since the user last spoke is not called again.
- It obeys `tool_choice`: a named function, "none", "required".
- Arguments come from the conversation: enum values named in it, values shaped like the
  example a parameter's description gives ("such as '#W0000000'"), emails, names, numbers,
  each matched to the parameter whose words stand nearest it; with probability
  `argument_error_rate` one value is garbled.
- It follows the system prompt's opening rule ("at the beginning, authenticate the user") on
  its first call, with weight `policy_weight`.
- It reads errors: when one names a tool that must come first, it calls that tool and then
  retries the call that was refused. Otherwise it answers in text after a success, and gives
  up after `give_up_after_errors` consecutive errors.
- Prompt tokens grow with the schemas offered (~4 bytes a token, as tokenizers give for JSON).

Deterministic: the same seed and request give the same answer.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

STOPWORDS = frozenset(
    "a an and are as at be by can could do for from has have i i'm im in is it its me my of on or our please "
    "so that the this to was we with you your would like want need some there their them then than also just".split()
)
_WORD = re.compile(r"[A-Za-z]+|\d+")
_EXAMPLE = re.compile(r"(?:such as|e\.g\.|for example|like)\s*:?\s*'([^']+)'((?:\s*(?:,|or)\s*'[^']+')*)", re.IGNORECASE)
_QUOTED = re.compile(r"'([^']+)'")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_NUMBER = re.compile(r"(?<![\w#.-])-?\d+(?:\.\d+)?(?![\w-])")
_NAME = re.compile(r"(?:I'm|I am|name is|This is|it's|from)\s+([A-Z][a-z]+)\s+([A-Z][a-z]+)")
_OPENING = re.compile(r"\b(at the (beginning|start)|first of all|must first|always start|before anything)\b", re.IGNORECASE)
_REPLACEMENT = re.compile(r"\b(?:for|into|to|new|with)\b[^.;:]*$", re.IGNORECASE)
_KEY_VALUE = re.compile(r"\b(\w+)\s*=\s*(\"[^\"]*\"|'[^']*'|[^\s,;]+)")


class ModelKnobs(BaseModel):
    """How good the simulated model is. Scenarios set these (`simulator:`) to reach a documented baseline."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(0.08, description="noise on tool-choice scores; higher means more wrong tools")
    crowding: float = Field(0.04, description="extra temperature per offered tool beyond the first")
    argument_error_rate: float = Field(0.03, description="chance that one argument value is garbled")
    give_up_after_errors: int = Field(3, description="consecutive tool errors before the model answers in text")
    policy_weight: float = Field(
        1.0, description="how strongly the first call follows what the system prompt says to do at the start"
    )


def words(text: str) -> list[str]:
    """Lower-case word stems, snake_case and camelCase split, stop words dropped."""
    spaced = re.sub(r"([a-z])([A-Z])", r"\1 \2", text)
    out = []
    for token in _WORD.findall(spaced):
        token = token.lower()
        if token in STOPWORDS or len(token) < 2:
            continue
        for suffix in ("ing", "ed", "es", "s"):
            if len(token) > len(suffix) + 3 and token.endswith(suffix):
                token = token[: -len(suffix)]
                break
        out.append(token)
    return out


def text_of(content: Any) -> str:
    """A message's text, whether its content is a string or a list of parts."""
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content if isinstance(content, str) else ""


@dataclass
class Turn:
    """What the model reads from a conversation."""

    user: str  # the latest user message
    since_user: list[dict[str, Any]]  # assistant and tool messages after it
    said: str  # everything the user said
    results: str  # everything tools returned
    successes_in_conversation: list[str]  # tools that succeeded so far, all turns
    opening_rule: str  # what the system prompt says to do first, if anything

    @classmethod
    def read(cls, messages: list[dict[str, Any]]) -> Turn:
        last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
        user = text_of(messages[last_user].get("content")) if last_user >= 0 else ""
        said = " \n ".join(text_of(m.get("content")) for m in messages if m.get("role") == "user")
        results = " \n ".join(text_of(m.get("content")) for m in messages if m.get("role") == "tool")
        system = " ".join(text_of(m.get("content")) for m in messages if m.get("role") in ("system", "developer"))
        opening = " ".join(sentence for sentence in re.split(r"(?<=[.!?])\s+|\n+", system) if _OPENING.search(sentence))
        return cls(user, messages[last_user + 1 :], said, results, _successes(messages), opening)

    def outcomes(self) -> list[tuple[str, bool, str]]:
        """(tool name, succeeded, result) for each tool call since the user spoke, in order."""
        names: dict[str, str] = {}
        found = []
        for message in self.since_user:
            for call in message.get("tool_calls") or ():
                names[call.get("id", "")] = (call.get("function") or {}).get("name", "")
            if message.get("role") == "tool":
                result = text_of(message.get("content"))
                found.append((names.get(message.get("tool_call_id", ""), ""), not _looks_failed(result), result))
        return found

    def tool_results(self) -> str:
        return " ".join(text_of(m.get("content")) for m in self.since_user if m.get("role") == "tool")


def _looks_failed(result: str) -> bool:
    head = result.strip()[:200].lower()
    return head.startswith(("error", '{"error"')) or '"error":' in head


class ToolIndex:
    """TF-IDF vectors of the offered tools; IDF over the offered set, as a reader weighs what tells tools apart."""

    def __init__(self, tools: list[dict[str, Any]]) -> None:
        self.tools = tools
        docs = []
        for tool in tools:
            weights: Counter[str] = Counter()
            for word in words(tool.get("name", "")):
                weights[word] += 3.0
            for word in words(tool.get("description", "")):
                weights[word] += 1.0
            for name in (tool.get("parameters") or {}).get("properties") or {}:
                for word in words(name):
                    weights[word] += 0.5
            docs.append(weights)
        df = Counter(word for doc in docs for word in doc)
        n = len(docs)
        self.vectors = []
        for doc in docs:
            vector = {w: tf * (1.0 + math.log((1 + n) / (1 + df[w]))) for w, tf in doc.items()}
            norm = math.sqrt(sum(v * v for v in vector.values())) or 1.0
            self.vectors.append({w: v / norm for w, v in vector.items()})

    def scores(self, text: str) -> list[float]:
        query = Counter(words(text))
        norm = math.sqrt(sum(c * c for c in query.values())) or 1.0
        return [sum(vector.get(w, 0.0) * c for w, c in query.items()) / norm for vector in self.vectors]


class SimulatedModel:
    def __init__(self, knobs: ModelKnobs | None = None, seed: int = 0) -> None:
        self.knobs = knobs or ModelKnobs()
        self.seed = seed

    def _rng(self, payload: dict[str, Any]) -> random.Random:
        """Seeded by the server's seed, the request's `seed` and what was said (not by call ids, which are unique)."""
        said = [(m.get("role"), text_of(m.get("content")),
                 [(c.get("function") or {}).get("name") for c in m.get("tool_calls") or ()])
                for m in payload.get("messages") or ()]
        digest = hashlib.blake2b(orjson.dumps([payload.get("seed"), said]), digest_size=8).hexdigest()
        return random.Random(f"{self.seed}:{digest}")

    def answer(self, payload: dict[str, Any]) -> tuple[dict[str, Any], str]:
        """The assistant message and finish reason for a chat-completions request."""
        messages = payload.get("messages") or []
        tools = [t["function"] for t in payload.get("tools") or () if t.get("type") == "function" and t.get("function")]
        choice = payload.get("tool_choice") or ("auto" if tools else "none")
        turn = Turn.read(messages)
        rng = self._rng(payload)
        forced = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
        if not tools or choice == "none":
            return self._say(turn), "stop"
        if forced:
            tool = next((t for t in tools if t["name"] == forced), None)
            if tool is None:
                return self._say(turn), "stop"
            return self._calls([tool], turn, rng), "tool_calls"

        outcomes = turn.outcomes()
        named = _named(tools, turn.user)
        if named:  # the user named the tools to use: follow the instruction, in parallel if allowed
            called = {name for name, _, _ in outcomes}
            pending = [t for t in named if t["name"] not in called]
            if not pending and choice != "required":
                return self._say(turn), "stop"
            pending = pending or named
            return self._calls(pending[:1] if payload.get("parallel_tool_calls") is False else pending, turn, rng), "tool_calls"

        by_name = {t["name"]: t for t in tools}
        planned = _next_in_plan(outcomes, by_name)
        if planned is not None:
            return self._calls([planned], turn, rng), "tool_calls"
        index = ToolIndex(tools)
        opening = _opening_tools(index, turn.opening_rule) if turn.opening_rule else set()
        if choice != "required" and self._done(outcomes, opened=_only_opening_done(turn, opening)):
            return self._say(turn), "stop"
        tried = {name for name, _, _ in outcomes}  # a model does not repeat a call it just made
        candidates = [i for i in range(len(tools)) if tools[i]["name"] not in tried] or list(range(len(tools)))
        scores = index.scores(turn.user + " " + turn.tool_results())
        if not turn.successes_in_conversation and opening:  # the policy says what to do at the start: do it
            scores = [s + self.knobs.policy_weight * (t["name"] in opening) for s, t in zip(scores, tools, strict=True)]
        temperature = self.knobs.temperature * (1 + self.knobs.crowding * (len(tools) - 1))
        pick = max(candidates, key=lambda i: scores[i] / temperature - math.log(-math.log(rng.random() or 1e-12)))
        return self._calls([tools[pick]], turn, rng), "tool_calls"

    def _done(self, outcomes: list[tuple[str, bool, str]], *, opened: bool) -> bool:
        """After a success the model answers (unless it was the policy's opening step); after
        `give_up_after_errors` errors in a row it gives up."""
        if not outcomes:
            return False
        if outcomes[-1][1]:
            return not opened
        streak = 0
        for _, ok, _ in reversed(outcomes):
            if ok:
                break
            streak += 1
        return streak >= self.knobs.give_up_after_errors

    @staticmethod
    def _say(turn: Turn) -> dict[str, Any]:
        outcomes = turn.outcomes()
        if outcomes and not outcomes[-1][1]:
            text = "I'm sorry, I could not complete that: " + turn.tool_results()[-200:]
        elif outcomes:
            text = "Done. " + turn.tool_results()[-200:]
        else:
            text = f"I can help with that. {turn.user[:160]}"
        return {"role": "assistant", "content": text}

    def _calls(self, chosen: list[dict[str, Any]], turn: Turn, rng: random.Random) -> dict[str, Any]:
        calls = []
        for tool in chosen:
            arguments = fill_arguments(tool.get("parameters") or {}, turn.said, turn.results, turn.user)
            if arguments and rng.random() < self.knobs.argument_error_rate:
                name = rng.choice(sorted(arguments))
                arguments[name] = _garble(arguments[name], rng)
            calls.append({"id": f"call_{uuid.uuid4().hex[:24]}",  # unique, as real ids are; never feeds a decision
                          "type": "function",
                          "function": {"name": tool["name"], "arguments": orjson.dumps(arguments).decode()}})
        return {"role": "assistant", "content": None, "tool_calls": calls}


def _successes(messages: list[dict[str, Any]]) -> list[str]:
    names: dict[str, str] = {}
    done = []
    for message in messages:
        for call in message.get("tool_calls") or ():
            names[call.get("id", "")] = (call.get("function") or {}).get("name", "")
        if message.get("role") == "tool" and not _looks_failed(text_of(message.get("content"))):
            done.append(names.get(message.get("tool_call_id", ""), ""))
    return done


def _opening_tools(index: ToolIndex, rule: str) -> set[str]:
    """The tools the system prompt's opening rule points at (those fitting it at least half as well as the best)."""
    scores = index.scores(rule)
    best = max(scores, default=0.0)
    return {t["name"] for t, score in zip(index.tools, scores, strict=True) if best > 0 and score >= 0.5 * best}


def _only_opening_done(turn: Turn, opening: set[str]) -> bool:
    """True when the only thing done so far is the policy's opening step: the real request is still to do."""
    return bool(opening) and len(turn.successes_in_conversation) == 1 and turn.successes_in_conversation[0] in opening


def _next_in_plan(outcomes: list[tuple[str, bool, str]], tools: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """What an error told the model to do: call the tool it named first, then retry the one that needed it."""
    if len(outcomes) >= 2 and outcomes[-1][1] and not outcomes[-2][1]:
        prerequisite, _, _ = outcomes[-1]
        blocked, _, error = outcomes[-2]
        if prerequisite in error and blocked in tools:
            return tools[blocked]
    if outcomes and not outcomes[-1][1]:
        failed, _, error = outcomes[-1]
        succeeded = {name for name, ok, _ in outcomes if ok}
        named = [n for n in tools if n != failed and n not in succeeded and re.search(rf"(?<!\w){re.escape(n)}(?!\w)", error)]
        if named:
            return tools[named[0]]
    return None


def _named(tools: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    """Tools the user names by their identifier (multi-word ones only, so 'think' in prose is no instruction)."""
    found = []
    for tool in tools:
        name = tool["name"]
        if ("_" in name or re.search(r"[a-z][A-Z]", name)) and (match := re.search(rf"(?<!\w){re.escape(name)}(?!\w)", text)):
            found.append((match.start(), tool))
    return [tool for _, tool in sorted(found, key=lambda pair: pair[0])]


def _garble(value: Any, rng: random.Random) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + rng.choice((-1, 1))
    if isinstance(value, list):
        return value[:-1] if len(value) > 1 else [_garble(v, rng) for v in value]
    text = str(value)
    if not text:
        return "unknown"
    i = rng.randrange(len(text))
    return text[:i] + ("7" if text[i] != "7" else "3") + text[i + 1 :]


# --- argument filling ------------------------------------------------------------------------

def _shape_pattern(example: str) -> str:
    """A regex for values shaped like `example`: digits and letter runs generalised, punctuation kept."""
    parts = []
    for run in re.findall(r"\d+|[a-z]+(?:_[a-z]+)*|[A-Z]+|[^A-Za-z\d]", example):
        if run.isdigit():
            parts.append(rf"\d{{{len(run)}}}" if len(run) >= 5 else r"\d+")
        elif run.isalpha() and run.isupper():
            parts.append(re.escape(run) if len(run) <= 2 else rf"[A-Z]{{{len(run)}}}")
        elif run[0].islower():  # a word chain such as gift_card: any chain of that kind
            parts.append(r"[a-z]+(?:_[a-z]+)*")
        else:
            parts.append(re.escape(run))
    return "".join(parts)


def _examples(description: str) -> list[str]:
    found = []
    for match in _EXAMPLE.finditer(description):
        found.append(match.group(1))
        found.extend(_QUOTED.findall(match.group(2) or ""))
    return found


@dataclass
class _Candidate:
    value: Any
    start: int
    from_user: bool  # said by the user, rather than read from a tool's result
    latest: bool  # said in the user's latest message
    before: list[str]  # the words just before it: what it was called
    replacement: bool  # introduced as the new one ("... for item 1323134954", "change it to ...")


class _Conversation:
    """Where argument values can come from: what the user said, then what tools returned."""

    def __init__(self, said: str, results: str, latest: str = "") -> None:
        self.text = said + "\n\n" + results
        self.boundary = len(said)
        self.latest_from = len(said) - len(latest) if latest and said.endswith(latest) else len(said)

    def candidates(self, pattern: str) -> list[_Candidate]:
        found = []
        for match in re.finditer(rf"(?<![\w#]){pattern}(?![\w])", self.text):
            preceding = self.text[max(0, match.start() - 40) : match.start()]
            replacement = bool(_REPLACEMENT.search(preceding[-18:]))
            found.append(_Candidate(match.group(0), match.start(), match.start() < self.boundary,
                                    self.latest_from <= match.start() < self.boundary, words(preceding)[-4:],
                                    replacement))
        return found


def _closeness(name: str, spec: dict[str, Any], candidate: _Candidate) -> float:
    label = set(words(name)) | set(words(spec.get("description", ""))[:6])
    near = sum(1.0 / (1 + distance) for distance, word in enumerate(reversed(candidate.before)) if word in label)
    if candidate.replacement:  # "X for Y": Y belongs to the new_* parameter, X to the other
        near += 1.0 if "new" in label else -0.5
    return near


def _rank(name: str, spec: dict[str, Any], candidate: _Candidate) -> tuple[bool, float, bool, int]:
    """What the user just said first; then nearest words; then the user over tool results; then the latest."""
    return (candidate.latest, _closeness(name, spec, candidate), candidate.from_user, candidate.start)


def fill_arguments(schema: dict[str, Any], said: str, results: str = "", latest: str = "") -> dict[str, Any]:
    """Values for the schema's required parameters (or its first one), read from the conversation."""
    conversation = _Conversation(said, results, latest)
    properties: dict[str, dict[str, Any]] = schema.get("properties") or {}
    wanted = list(schema.get("required") or list(properties)[:1])
    given = {k: v.strip("\"'") for k, v in _KEY_VALUE.findall(conversation.text)}
    arguments: dict[str, Any] = {}
    claims: dict[str, list[tuple[tuple[bool, float, bool, int], str, _Candidate]]] = {}
    numbers = iter(sorted(conversation.candidates(_NUMBER.pattern), key=lambda c: (not c.from_user, c.start)))
    name_match = _NAME.search(said) or _NAME.search(results)
    for name in wanted:
        spec = properties.get(name) or {}
        kind = spec.get("type", "string")
        examples = _examples(spec.get("description", "")) or _examples((spec.get("items") or {}).get("description", ""))
        if name in given:
            arguments[name] = _typed(given[name], kind)
        elif spec.get("enum"):
            arguments[name] = _enum_choice(spec["enum"], said, results)
        elif "email" in name:
            emails = _EMAIL.findall(said) or _EMAIL.findall(results)
            arguments[name] = emails[-1] if emails else "unknown@example.com"
        elif name_match and name in ("first_name", "last_name", "firstname", "lastname"):
            arguments[name] = name_match.group(1 if name.startswith("first") else 2)
        elif examples:
            pattern = "|".join(f"(?:{_shape_pattern(e)})" for e in examples)
            for candidate in conversation.candidates(f"(?:{pattern})"):
                claims.setdefault(f"{candidate.value}@{candidate.start}", []).append(
                    (_rank(name, spec, candidate), name, candidate))
        elif kind in ("integer", "number"):
            candidate = next(numbers, None)
            arguments[name] = _typed(candidate.value, kind) if candidate else 1
        elif kind == "boolean":
            arguments[name] = True
        elif kind == "array":
            arguments[name] = []
        elif kind == "object":
            arguments[name] = {}
        else:
            arguments[name] = said.strip().splitlines()[-1][:120] if said.strip() else ""
    _assign_shaped(claims, properties, arguments)
    for name in wanted:  # nothing in the conversation fits: like real models, fall back on the example
        if name not in arguments:
            spec = properties.get(name) or {}
            examples = _examples(spec.get("description", "")) or _examples((spec.get("items") or {}).get("description", ""))
            value = examples[0] if examples else ""
            arguments[name] = [value] if spec.get("type") == "array" else value
    return arguments


def _assign_shaped(claims: dict[str, list[tuple[tuple[bool, float, bool, int], str, _Candidate]]],
                   properties: dict[str, dict[str, Any]], arguments: dict[str, Any]) -> None:
    """Each shaped value goes to the parameter whose words stand nearest it; each parameter takes its best."""
    won: dict[str, list[tuple[tuple[bool, float, bool, int], _Candidate]]] = {}
    for options in claims.values():
        rank, name, candidate = max(options, key=lambda o: (o[0][1], -list(properties).index(o[1])))
        won.setdefault(name, []).append((rank, candidate))
    wanted_shaped = {name for options in claims.values() for _, name, _ in options}
    for name in wanted_shaped:
        if (properties.get(name) or {}).get("type") == "array":  # every value it won, the user's first
            mine = [c for _, c in won.get(name, [])]
            said = [c for c in mine if c.from_user] or mine
            arguments[name] = list(dict.fromkeys(c.value for c in sorted(said, key=lambda c: c.start)))
        else:  # its best value; if a closer parameter won every one, its best claim all the same
            mine = won.get(name) or [(rank, c) for options in claims.values() for rank, n, c in options if n == name]
            arguments[name] = max(mine, key=lambda pair: pair[0])[1].value


def _enum_choice(options: list[Any], said: str, results: str) -> Any:
    for text in (said.lower(), results.lower()):
        for option in options:
            if str(option).lower() in text:
                return option
    context_words = set(words(said))
    return max(options, key=lambda o: len(set(words(str(o))) & context_words))


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
