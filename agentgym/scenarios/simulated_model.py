"""The simulated upstream model: an imperfect tool-calling LLM, so that learning results mean something.

It sees what a real model sees, the request: the conversation and the offered tools. It never
sees the scenario's gold steps or the planner. Its behaviour:

- Tool choice: each offered tool is scored by lexical similarity (TF-IDF over the offered
  tools) between the current request (the latest user message, and the tool results since)
  and the tool's name, description and parameter names; a tool is sampled from those scores
  with Gumbel noise. The noise's temperature grows with the number of offered tools
  (`crowding`), and near-duplicate tools score alike, so more and more similar tools mean
  more wrong choices, as measured for real models (RAG-MCP, arXiv 2505.03275; MetaTool,
  arXiv 2310.03128). Tools that failed since the last success are not retried.
- It obeys `tool_choice`: a named function, "none", "required".
- Arguments come from the conversation: enum values named in it, values shaped like the
  example a parameter's description gives ("such as '#W0000000'"), emails, names, numbers,
  each matched to the parameter whose words stand nearest it; with probability
  `argument_error_rate` one value is garbled.
- It stops calling tools and answers in text once the tool that best fits the user's request
  has succeeded, or after `give_up_after_errors` consecutive errors.
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
_KEY_VALUE = re.compile(r"\b(\w+)\s*=\s*(\"[^\"]*\"|'[^']*'|[^\s,;]+)")


class ModelKnobs(BaseModel):
    """How good the simulated model is. Scenarios set these (`simulator:`) to reach a documented baseline."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(0.08, description="noise on tool-choice scores; higher means more wrong tools")
    crowding: float = Field(0.04, description="extra temperature per offered tool beyond the first")
    argument_error_rate: float = Field(0.03, description="chance that one argument value is garbled")
    give_up_after_errors: int = Field(3, description="consecutive tool errors before the model answers in text")


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


def _text(content: Any) -> str:
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content if isinstance(content, str) else ""


@dataclass
class Turn:
    """What the model reads from a conversation."""

    user: str  # the latest user message
    since_user: list[dict[str, Any]]  # assistant and tool messages after it
    context: str  # everything said so far that values can be taken from

    @classmethod
    def read(cls, messages: list[dict[str, Any]]) -> Turn:
        last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
        user = _text(messages[last_user].get("content")) if last_user >= 0 else ""
        context = " \n ".join(_text(m.get("content")) for m in messages if m.get("role") in ("user", "tool"))
        return cls(user, messages[last_user + 1 :], context)

    def outcomes(self) -> list[tuple[str, bool]]:
        """(tool name, succeeded) for each tool call since the user spoke, in order."""
        names: dict[str, str] = {}
        found = []
        for message in self.since_user:
            for call in message.get("tool_calls") or ():
                names[call.get("id", "")] = (call.get("function") or {}).get("name", "")
            if message.get("role") == "tool":
                result = _text(message.get("content"))
                found.append((names.get(message.get("tool_call_id", ""), ""), not _looks_failed(result)))
        return found

    def tool_results(self) -> str:
        return " ".join(_text(m.get("content")) for m in self.since_user if m.get("role") == "tool")


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
        said = [(m.get("role"), _text(m.get("content")),
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
            called = {name for name, _ in outcomes}
            pending = [t for t in named if t["name"] not in called]
            if not pending and choice != "required":
                return self._say(turn), "stop"
            pending = pending or named
            return self._calls(pending[:1] if payload.get("parallel_tool_calls") is False else pending, turn, rng), "tool_calls"

        index = ToolIndex(tools)
        if choice != "required" and self._done(index, turn, outcomes):
            return self._say(turn), "stop"
        failed = _failed_since_success(outcomes)
        scores = index.scores(turn.user + " " + turn.tool_results())
        temperature = self.knobs.temperature * (1 + self.knobs.crowding * (len(tools) - 1))
        candidates = [i for i in range(len(tools)) if tools[i]["name"] not in failed] or list(range(len(tools)))
        pick = max(candidates, key=lambda i: scores[i] / temperature - math.log(-math.log(rng.random() or 1e-12)))
        return self._calls([tools[pick]], turn, rng), "tool_calls"

    def _done(self, index: ToolIndex, turn: Turn, outcomes: list[tuple[str, bool]]) -> bool:
        if not outcomes:
            return False
        streak = 0
        for _, ok in reversed(outcomes):
            if ok:
                break
            streak += 1
        if streak >= self.knobs.give_up_after_errors:
            return True
        scores = index.scores(turn.user)
        best = index.tools[max(range(len(scores)), key=scores.__getitem__)]["name"]
        return any(name == best and ok for name, ok in outcomes)

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
            arguments = fill_arguments(tool.get("parameters") or {}, turn.context)
            if arguments and rng.random() < self.knobs.argument_error_rate:
                name = rng.choice(sorted(arguments))
                arguments[name] = _garble(arguments[name], rng)
            calls.append({"id": f"call_{uuid.uuid4().hex[:24]}",  # unique, as real ids are; never feeds a decision
                          "type": "function",
                          "function": {"name": tool["name"], "arguments": orjson.dumps(arguments).decode()}})
        return {"role": "assistant", "content": None, "tool_calls": calls}


def _named(tools: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    """Tools the user names by their identifier (multi-word ones only, so 'think' in prose is no instruction)."""
    found = []
    for tool in tools:
        name = tool["name"]
        if ("_" in name or re.search(r"[a-z][A-Z]", name)) and (match := re.search(rf"(?<!\w){re.escape(name)}(?!\w)", text)):
            found.append((match.start(), tool))
    return [tool for _, tool in sorted(found, key=lambda pair: pair[0])]


def _failed_since_success(outcomes: list[tuple[str, bool]]) -> set[str]:
    failed: set[str] = set()
    for name, ok in outcomes:
        failed = set() if ok else failed | {name}
    return failed


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
    before: list[str]  # the words just before it: what the user called it


def _candidates(pattern: str, context: str) -> list[_Candidate]:
    found = []
    for match in re.finditer(rf"(?<![\w#]){pattern}(?![\w])", context):
        found.append(_Candidate(match.group(0), match.start(), words(context[max(0, match.start() - 40) : match.start()])[-4:]))
    return found


def _closeness(name: str, spec: dict[str, Any], candidate: _Candidate) -> float:
    label = set(words(name)) | set(words(spec.get("description", ""))[:6])
    return sum(1.0 / (1 + distance) for distance, word in enumerate(reversed(candidate.before)) if word in label)


def fill_arguments(schema: dict[str, Any], context: str) -> dict[str, Any]:
    """Values for the schema's required parameters (or its first one), read from the conversation."""
    properties: dict[str, dict[str, Any]] = schema.get("properties") or {}
    wanted = list(schema.get("required") or list(properties)[:1])
    given = {k: v.strip("\"'") for k, v in _KEY_VALUE.findall(context)}
    arguments: dict[str, Any] = {}
    claims: dict[str, list[tuple[float, str, _Candidate]]] = {}
    numbers = iter(_candidates(_NUMBER.pattern, context))
    name_match = _NAME.search(context)
    for name in wanted:
        spec = properties.get(name) or {}
        kind = spec.get("type", "string")
        if name in given:
            arguments[name] = _typed(given[name], kind)
        elif spec.get("enum"):
            arguments[name] = _enum_choice(spec["enum"], context)
        elif "email" in name:
            emails = _EMAIL.findall(context)
            arguments[name] = emails[-1] if emails else "unknown@example.com"
        elif name_match and name in ("first_name", "last_name", "firstname", "lastname"):
            arguments[name] = name_match.group(1 if name.startswith("first") else 2)
        elif _examples(spec.get("description", "")) or _examples((spec.get("items") or {}).get("description", "")):
            examples = _examples(spec.get("description", "")) or _examples(spec["items"]["description"])
            pattern = "|".join(f"(?:{_shape_pattern(e)})" for e in examples)
            for candidate in _candidates(f"(?:{pattern})", context):
                claims.setdefault(candidate.value + f"@{candidate.start}", []).append(
                    (_closeness(name, spec, candidate), name, candidate))
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
            arguments[name] = context.strip().splitlines()[-1][:120] if context.strip() else ""
    _assign_shaped(claims, properties, arguments)
    for name in wanted:  # nothing in the conversation fits: like real models, fall back on the example
        if name not in arguments:
            spec = properties.get(name) or {}
            examples = _examples(spec.get("description", "")) or _examples((spec.get("items") or {}).get("description", ""))
            value = examples[0] if examples else ""
            arguments[name] = [value] if spec.get("type") == "array" else value
    return arguments


def _assign_shaped(claims: dict[str, list[tuple[float, str, _Candidate]]], properties: dict[str, dict[str, Any]],
                   arguments: dict[str, Any]) -> None:
    """Give each shaped value to the parameter whose words stand nearest it (ties: the later mention)."""
    chosen: dict[str, list[_Candidate]] = {}
    for options in claims.values():
        best = max(options, key=lambda o: (o[0], -list(properties).index(o[1])))
        chosen.setdefault(best[1], []).append(best[2])
    wanted_shaped = {name for options in claims.values() for _, name, _ in options}
    for name in wanted_shaped:
        values = sorted(chosen.get(name, []), key=lambda c: c.start)
        distinct = list(dict.fromkeys(c.value for c in values))
        if (properties.get(name) or {}).get("type") == "array":
            arguments[name] = distinct
        elif distinct:
            arguments[name] = distinct[-1]
        else:  # every match was claimed by a closer parameter: reuse the most recent one
            pool = [o[2] for options in claims.values() for o in options if o[1] == name]
            arguments[name] = max(pool, key=lambda c: c.start).value if pool else ""
    for name, value in list(arguments.items()):
        if isinstance(value, str) and (properties.get(name) or {}).get("type") == "array":
            arguments[name] = [value]


def _enum_choice(options: list[Any], context: str) -> Any:
    lowered = context.lower()
    for option in options:
        if str(option).lower() in lowered:
            return option
    context_words = set(words(context))
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
