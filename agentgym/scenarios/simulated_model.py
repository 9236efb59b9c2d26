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
- Arguments come from the conversation, as `agentgym.scenarios.arguments` reads it. With
  probability `argument_error_rate` one value is garbled.
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

from agentgym.scenarios.arguments import Conversation, fill_arguments, parameter_examples, shape_pattern, words

_OPENING = re.compile(r"\b(at the (beginning|start)|first of all|must first|always start|before anything)\b", re.IGNORECASE)


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

    def understand(self, request: str, context: str, conversation: Conversation | None = None) -> list[float]:
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
        examples = [e for e in parameter_examples(spec) if re.search(r"\d", e)]
        if examples:
            patterns.append("|".join(f"(?:{shape_pattern(e)})" for e in examples))
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
        if choice != "required" and self._done(outcomes, opened=_only_opening_done(turn, index, opening)):
            return self._say(turn), "stop"
        # a model does not repeat a call it just made, nor one that said the request is not for it
        tried = {name for name, _, _ in outcomes} | turn.refused
        candidates = [i for i in range(len(tools)) if tools[i]["name"] not in tried] or list(range(len(tools)))
        scores = index.understand(turn.user, turn.tool_results(), Conversation(turn.said, turn.results))
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


def _only_opening_done(turn: Turn, offered: ToolIndex, opening: set[str]) -> bool:
    """True when the only thing done so far is the policy's opening step: the real request is still
    to do. Judged among the tools offered now (`opening`: those the rule points at among them) and
    the one called (by its name, as the conversation shows it): a model that authenticated knows
    it did, whatever tools the next request offers."""
    if not turn.opening_rule or len(turn.successes_in_conversation) != 1:
        return False
    done = turn.successes_in_conversation[0]
    if any(t["name"] == done for t in offered.tools):
        return done in opening
    return done in _opening_tools(ToolIndex([*offered.tools, {"name": done}]), turn.opening_rule)


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
