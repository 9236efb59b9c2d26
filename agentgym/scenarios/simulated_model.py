"""The simulated upstream model: an imperfect tool-calling LLM, so that learning results mean something.

It sees what a real model sees, the request: the conversation and the offered tools. It never
sees the scenario's gold steps or the planner. Its behaviour:

- Tool choice: each offered tool is scored by lexical similarity (TF-IDF over the offered
  tools) between the current request (the latest user message, and the tool results since)
  and the tool's name, description and parameter names, with what a language model knows on
  top: common verbs and their tool-name words (`SYNONYMS`: "shut" is close, "tag" is label),
  questions favour tools that read (`READ_BONUS`), and a tool whose required identifier
  ('msg-12345') is nowhere in the conversation yet is put off (`UNREADY_PENALTY`). A tool is
  sampled from those scores with Gumbel noise. The noise's temperature grows with the number
  of offered tools (`crowding`), and near-duplicate tools score alike, so more and more
  similar tools mean more wrong choices, as measured for real models (RAG-MCP, arXiv
  2505.03275; MetaTool, arXiv 2310.03128). It does not call again a tool it just called, nor
  one that answered that the request is not for it.
- It obeys `tool_choice`: a named function, "none", "required".
- Arguments come from the conversation: enum values named in it (plurals too), values shaped
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
  names a value for them. With probability `argument_error_rate` one value is garbled.
- It follows the system prompt's opening rule ("at the beginning, authenticate the user";
  "must first obtain the user id, then ...": the part before "then") on its first call, with
  weight `policy_weight`.
- It reads errors: when one names a tool that must come first, it calls that tool and then
  retries the call that was refused; when one says an argument is missing, it adds it, once.
  Otherwise it answers in text after a success, and gives up after `give_up_after_errors`
  consecutive errors.
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
_EXAMPLE = re.compile(r"(?:such as|e\.g\.|for example|like)\s*[:,]?\s*'([^']+)'((?:\s*(?:,|or)\s*'[^']+')*)", re.IGNORECASE)
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

    temperature: float = Field(0.01, description="noise on tool-choice scores; higher means more wrong tools")
    crowding: float = Field(0.04, description="extra temperature per offered tool beyond the first")
    argument_error_rate: float = Field(0.02, description="chance that one argument value is garbled")
    give_up_after_errors: int = Field(1, description="consecutive tool errors before the model answers in text")
    policy_weight: float = Field(
        1.0, description="how strongly the first call follows what the system prompt says to do at the start"
    )


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
    refused: set[str]  # tools that answered that they cannot serve this request, all turns
    opening_rule: str  # what the system prompt says to do first, if anything
    request: str  # the request the latest message makes: an earlier one it repeats ("... Again: <request>"), or itself

    @classmethod
    def read(cls, messages: list[dict[str, Any]]) -> Turn:
        last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
        user = text_of(messages[last_user].get("content")) if last_user >= 0 else ""
        said = " \n ".join(text_of(m.get("content")) for m in messages if m.get("role") == "user")
        results = " \n ".join(text_of(m.get("content")) for m in messages if m.get("role") == "tool")
        system = " ".join(text_of(m.get("content")) for m in messages if m.get("role") in ("system", "developer"))
        opening = " ".join(_opening_clause(sentence) for sentence in re.split(r"(?<=[.!?])\s+|\n+", system)
                           if _OPENING.search(sentence))
        successes, refused = _outcomes_so_far(messages)
        earlier = [text_of(m.get("content")) for m in messages[:max(last_user, 0)] if m.get("role") == "user"]
        request = next((e for e in reversed(earlier) if e.strip() and user.rstrip().endswith(e.strip())), user)
        return cls(user, messages[last_user + 1 :], said, results, successes, refused, opening, request)

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


# What a language model knows that word overlap does not: common verbs of software, mail and
# commerce requests and the words tool names use for them. General English, not any task's answer.
SYNONYMS = {
    "shut": "close", "abandon": "close", "kill": "close cancel", "tag": "label add", "untag": "label remove",
    "drop": "remove", "strip": "remove", "delete": "remove", "take": "remove", "unset": "remove",
    "kick": "run start", "start": "run", "trigger": "run", "launch": "run", "execute": "run", "fire": "run",
    "retry": "rerun", "restart": "rerun", "again": "rerun", "squash": "merge", "rebase": "merge", "land": "merge",
    "file": "create", "raise": "create", "log": "create", "new": "create", "add": "create", "make": "create",
    "book": "create reserve", "schedule": "create schedule", "set": "create update",
    "note": "comment", "remark": "comment", "say": "comment message", "tell": "message send",
    "show": "get", "print": "get", "display": "get", "view": "get", "see": "get", "open": "get", "pull": "get",
    "read": "get", "fetch": "get", "details": "get", "status": "get", "who": "get", "what": "get", "look": "get find",
    "locate": "search find", "which": "list find", "any": "list search", "all": "list",
    "lint": "linter run", "typecheck": "linter run", "mypy": "linter", "ruff": "linter", "eslint": "linter",
    "change": "update modify diff", "changes": "diff", "rename": "update", "move": "update", "edit": "update modify",
    "lgtm": "approve", "sign": "approve", "ok": "approve", "review": "review reviewer",
    "mail": "email send", "write": "send create", "forward": "forward send", "answer": "reply", "respond": "reply",
    "meeting": "event calendar", "meet": "event calendar", "call": "event calendar", "slot": "free time",
    "red": "fail", "broken": "fail", "failing": "fail", "green": "pass", "passing": "pass",
    "money": "refund payment", "pay": "payment", "swap": "exchange", "send": "send",
}
# A tool whose name starts with one of these reads; the others act. Questions call for reading.
READ_VERBS = frozenset("get list search find fetch read show describe lookup query check compare count calculate "
                       "view download".split())
_QUESTION = re.compile(r"(?:^|[.!]\s+)(?:who|what|what's|which|is|are|was|were|did|does|do|has|have|how|when|where|why)\b"
                       r"[^.!?]*\?", re.IGNORECASE)
READ_BONUS = 0.15  # how much a question favours tools that read
UNREADY_PENALTY = 0.2  # how much a tool is disfavoured while an identifier it requires is nowhere in the conversation
NAME_WEIGHT, PARAMETER_WEIGHT = 3.0, 0.5  # a word in a tool's name, in a parameter's name, against one in its description


def _expand(query: list[str]) -> list[str]:
    return query + [w for word in query for w in words(SYNONYMS.get(word, ""))]


class ToolIndex:
    """TF-IDF vectors of the offered tools; IDF over the offered set, as a reader weighs what tells tools apart."""

    def __init__(self, tools: list[dict[str, Any]]) -> None:
        self.tools = tools
        docs = []
        for tool in tools:
            weights: Counter[str] = Counter()
            for word in words(tool.get("name", "")):
                weights[word] += NAME_WEIGHT
            for word in words(tool.get("description", "")):
                weights[word] += 1.0
            for name in (tool.get("parameters") or {}).get("properties") or {}:
                for word in words(name):
                    weights[word] += PARAMETER_WEIGHT
            docs.append(weights)
        df = Counter(word for doc in docs for word in doc)
        n = len(docs)
        self.vectors = []
        for doc in docs:
            vector = {w: tf * (1.0 + math.log((1 + n) / (1 + df[w]))) for w, tf in doc.items()}
            norm = math.sqrt(sum(v * v for v in vector.values())) or 1.0
            self.vectors.append({w: v / norm for w, v in vector.items()})
        self.reads = [bool(words(t.get("name", ""))[:1]) and words(t["name"])[0] in READ_VERBS for t in tools]

    def scores(self, text: str) -> list[float]:
        query = Counter(_expand(words(text)))
        norm = math.sqrt(sum(c * c for c in query.values())) or 1.0
        return [sum(vector.get(w, 0.0) * c for w, c in query.items()) / norm for vector in self.vectors]

    def understand(self, request: str, context: str, conversation: _Conversation | None = None) -> list[float]:
        """Scores as a model reads a request: what it asks for in meaning (synonyms included);
        whether it is a question, which calls for a tool that reads; and whether the conversation
        holds the identifiers (values shaped like 'msg-12345') each tool requires: a model looks
        an id up before it calls a tool that needs it."""
        question = bool(_QUESTION.search(request))
        out = []
        for tool, score, reads in zip(self.tools, self.scores(request + " " + context), self.reads, strict=True):
            unready = conversation is not None and any(
                not conversation.candidates(pattern) for pattern in _identifier_patterns(tool))
            out.append(score + READ_BONUS * (question and reads) - UNREADY_PENALTY * unready)
        return out


def _identifier_patterns(tool: dict[str, Any]) -> list[str]:
    """Shapes of the identifiers a tool requires: required parameters whose example has a digit."""
    schema = tool.get("parameters") or {}
    properties = schema.get("properties") or {}
    patterns = []
    for name in schema.get("required") or ():
        spec = properties.get(name) or {}
        examples = [e for e in _examples(spec.get("description", "")) or _examples((spec.get("items") or {}).get(
            "description", "")) if re.search(r"\d", e)]
        if examples:
            patterns.append("|".join(f"(?:{_shape_pattern(e)})" for e in examples))
    return patterns


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
        if (correction := _correction(outcomes, by_name)) is not None:
            tool, missing = correction
            return self._calls([tool], turn, rng, {missing}), "tool_calls"
        index = ToolIndex(tools)
        opening = _opening_tools(index, turn.opening_rule) if turn.opening_rule else set()
        if choice != "required" and self._done(outcomes, opened=_only_opening_done(turn, opening)):
            return self._say(turn), "stop"
        # a model does not repeat a call it just made, nor one that said the request is not for it
        tried = {name for name, _, _ in outcomes} | turn.refused
        candidates = [i for i in range(len(tools)) if tools[i]["name"] not in tried] or list(range(len(tools)))
        scores = index.understand(turn.user, turn.tool_results(), _Conversation(turn.said, turn.results))
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

    def _calls(self, chosen: list[dict[str, Any]], turn: Turn, rng: random.Random,
               missing: set[str] = frozenset()) -> dict[str, Any]:
        calls = []
        for tool in chosen:
            arguments = fill_arguments(tool.get("parameters") or {}, turn.said, turn.results, turn.request, tool["name"],
                                       missing)
            if arguments and rng.random() < self.knobs.argument_error_rate:
                name = rng.choice(sorted(arguments))
                arguments[name] = _garble(arguments[name], rng)
            calls.append({"id": f"call_{uuid.uuid4().hex[:24]}",  # unique, as real ids are; never feeds a decision
                          "type": "function",
                          "function": {"name": tool["name"], "arguments": orjson.dumps(arguments).decode()}})
        return {"role": "assistant", "content": None, "tool_calls": calls}


def _outcomes_so_far(messages: list[dict[str, Any]]) -> tuple[list[str], set[str]]:
    """The tools that succeeded, in order, and those that said the request is not theirs."""
    names: dict[str, str] = {}
    done, refused = [], set()
    for message in messages:
        for call in message.get("tool_calls") or ():
            names[call.get("id", "")] = (call.get("function") or {}).get("name", "")
        if message.get("role") == "tool":
            result, name = text_of(message.get("content")), names.get(message.get("tool_call_id", ""), "")
            if not _looks_failed(result):
                done.append(name)
            elif "not one it can serve" in result or "cannot serve" in result:
                refused.add(name)
    return done, refused


def _opening_clause(sentence: str) -> str:
    """What a rule says to do first: the words after "must first" up to the clause's end ("obtain the
    user id", not the ", then ask for the trip type" after it); a whole "at the beginning, ..." sentence."""
    match = _OPENING.search(sentence)
    if match and match.group(2) is None:
        return re.split(r"[,;]|\bthen\b", sentence[match.end():], maxsplit=1)[0]
    return sentence


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


_MISSING = re.compile(r"^missing required argument '(\w+)'$")


def _correction(outcomes: list[tuple[str, bool, str]], tools: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], str] | None:
    """What a "missing required argument 'date'" error tells the model: the same call with that
    argument added, once. (A value "not found" it does not retry: it has no better one.)"""
    if not outcomes or outcomes[-1][1] or outcomes[-1][0] not in tools:
        return None
    failed, _, error = outcomes[-1]
    if len(outcomes) >= 2 and outcomes[-2][0] == failed and not outcomes[-2][1]:
        return None  # corrected once already
    try:
        message = str(orjson.loads(error).get("error", ""))
    except (orjson.JSONDecodeError, AttributeError):
        message = error
    match = _MISSING.match(message)
    return (tools[failed], match.group(1)) if match else None


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
    after: list[str]  # the words just after it ("14 days", "the release/2.14 branch")
    replacement: bool  # introduced as the new one ("... for item 1323134954", "change it to ...")


class _Conversation:
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
    conversation = _Conversation(said, results, latest)
    properties: dict[str, dict[str, Any]] = schema.get("properties") or {}
    required = set(schema.get("required") or list(properties)[:1]) | set(missing)

    given = {k: v.strip("\"'") for k, v in _KEY_VALUE.findall(conversation.text)}
    if "city" in properties:  # an address said on one line goes to the address fields, as a reader parses it:
        # the one just said, else the last one said (a later request may need an address given earlier)
        given = {**(_address_fields(latest, properties) or _address_fields(said, properties)), **given}
    arguments: dict[str, Any] = {}
    claims: dict[str, list[tuple[tuple[bool, float, bool, int], str, _Candidate]]] = {}
    number_candidates = conversation.candidates(_NUMBER.pattern)
    renaming = any("new" in _label(name, spec) for name, spec in properties.items())
    conversion = _conversion(latest or said)
    name_match = _NAME.search(said) or _NAME.search(results)
    entities = iter(_entities(latest or said))
    number_lists = iter(_number_lists(latest or said))
    for name, spec in properties.items():
        kind = spec.get("type", "string")
        items = spec.get("items") or {}
        examples = _examples(spec.get("description", "")) or _examples(items.get("description", ""))
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
            pattern = "|".join(f"(?:{_shape_pattern(e)})" for e in examples)
            for candidate in conversation.candidates(f"(?:{pattern})"):
                claims.setdefault(candidate.value, []).append((_rank(name, spec, candidate, renaming), name, candidate))
        elif kind == "string" and "date" in words(name):  # a date said, in words or ISO form, like a shaped value
            for candidate in conversation.candidates(_DATE):
                claims.setdefault(candidate.value, []).append((_rank(name, spec, candidate, renaming), name, candidate))
        elif kind in ("integer", "number"):  # numbers go out like shaped values: by the words around them
            fitting = [c for c in number_candidates if _fits(c.value, name, kind)]
            for candidate in fitting:
                claims.setdefault(candidate.value, []).append((_rank(name, spec, candidate, renaming), name, candidate))
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
            examples = _examples(spec.get("description", "")) or _examples((spec.get("items") or {}).get("description", ""))
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


def _assign_shaped(claims: dict[str, list[tuple[tuple[bool, float, bool, int], str, _Candidate]]],
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
