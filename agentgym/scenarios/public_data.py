"""Scenario builders over public benchmark data (tau-bench, BFCL v4), read from `data_dir()`.

Nothing is copied into the package: each builder reads the data at load time and returns the
fields of a `Scenario` (everything but the name, title and description its YAML file adds).

The simulated model sees only the conversation and the tool schemas, so every checked argument
value has to be said by the user (or returned by an earlier step). Benchmark tasks are written
for an LLM user who knows more than it says, so the user's words here are generated from the
gold calls: deterministic, first person, one message per intent.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from agentgym.scenarios.scenario import Task, data_dir

Action = dict[str, Any]

# --------------------------------------------------------------------------------------------
# tau-bench
# --------------------------------------------------------------------------------------------

TAU_TASK_FILES = {"retail": ("train", "dev", "test"), "airline": ("test",)}
WRITE_PREFIXES = ("book_", "cancel_", "exchange_", "modify_", "return_", "send_", "transfer_", "update_")
FREE_TEXT = {"summary", "thought"}  # said in the agent's own words: never checked

GREETINGS = ("Hi.", "Hello.", "Hi there.")
FOLLOW_UP_OPENERS = ("Thanks. Also:", "Great, one more thing.", "Thank you. Next:")
CANCEL_REASONS = {"no longer needed": "it is no longer needed", "ordered by mistake": "it was ordered by mistake"}


def tau_bench(domain: str, split: str = "train", limit: int | None = None) -> dict[str, Any]:
    """A tau-bench domain: its tools and policy unchanged, its tasks turned into scripted users.

    `retail` has train (500), dev (20) and test (115) tasks; `airline` has only test (50).
    Tasks with no gold action, or whose user cannot be identified, are skipped.
    """
    if split not in TAU_TASK_FILES.get(domain, ()):
        raise ValueError(f"tau-bench has no {domain!r} tasks for split {split!r}")
    folder = data_dir() / "tau_bench"
    raw_tasks = _json(folder / f"{domain}_tasks_{split}.json")
    make = _retail_task if domain == "retail" else _airline_task
    tasks = [task for raw in raw_tasks if (task := make(raw, f"{domain}-{split}-{raw['task_index']}"))]
    return {
        "system_prompt": _json(folder / f"{domain}_policy.json")["text"],
        "tools": _json(folder / f"{domain}_tools.json"),
        "tasks": tasks[:limit],
    }


def _json(path: Path) -> Any:
    return orjson.loads(path.read_bytes())


def _is_write(action: Action) -> bool:
    return action["name"].startswith(WRITE_PREFIXES)


def _intents(actions: list[Action]) -> list[list[Action]]:
    """Split gold actions into what the user asks for at once: reads up to and including a write."""
    groups: list[list[Action]] = [[]]
    for action in actions:
        groups[-1].append(action)
        if _is_write(action):
            groups.append([])
    return [group for group in groups if group]


def _checked(action: Action) -> dict[str, Any]:
    """The arguments the environment compares: values a user can say (no nested objects, no prose)."""

    def sayable(value: Any) -> bool:
        return not isinstance(value, dict | list) or all(not isinstance(v, dict | list) for v in value)

    return {k: v for k, v in action["kwargs"].items() if k not in FREE_TEXT and sayable(v)}


def _conversation(index: int, identity: str, sentences: list[list[str]]) -> tuple[str, list[str]]:
    """Opening message (greeting, who I am, first intent) and one follow-up per further intent."""
    texts = [" ".join(dict.fromkeys(group)) for group in sentences]  # a repeated read is asked once
    user = f"{GREETINGS[index % len(GREETINGS)]} {identity} {texts[0]}"
    return user, [f"{FOLLOW_UP_OPENERS[(index + i) % len(FOLLOW_UP_OPENERS)]} {t}" for i, t in enumerate(texts[1:])]


def _build_task(raw: dict[str, Any], task_id: str, auth: Action, identity: str, actions: list[Action],
                say, result) -> Task:
    """`say` words an action for the user, `result` is what its tool returns."""
    index = raw["task_index"]  # picks the greeting: varied, yet the same on every build
    user, follow_ups = _conversation(index, identity, [[say(a) for a in group] for group in _intents(actions)])
    steps = [{"tool": a["name"], "arguments": _checked(a), "result": result(a)} for a in [auth, *actions]]
    return Task(id=task_id, user=user, follow_ups=follow_ups, steps=steps)


def _values(actions: list[Action], key: str) -> list[Any]:
    """Every value the actions pass as `key` (lists flattened), in first-seen order."""
    found: dict[Any, None] = {}
    for action in actions:
        value = action["kwargs"].get(key)
        for item in value if isinstance(value, list) else [value]:
            if item is not None:
                found[item] = None
    return list(found)


def _said_values(kwargs: dict[str, Any]) -> dict[str, Any]:
    """A write's arguments as its result echoes them: the agent's own prose left out."""
    return {k: v for k, v in kwargs.items() if k not in FREE_TEXT}


def _calculate(expression: str) -> float:
    """What tau-bench's `calculate` tool returns: plain arithmetic, rounded to cents."""
    if not re.fullmatch(r"[\d\s.+\-*/()]+", expression):
        raise ValueError(f"not an arithmetic expression: {expression!r}")
    return round(eval(expression, {"__builtins__": {}}), 2)  # noqa: S307 - digits and operators only


def _joined(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


# ---- retail ---------------------------------------------------------------------------------

IDENTITY = re.compile(r"Your? name is (\S+) (\S+) and your (?:zip code is (\d{5})|email is ([\w.]+@[\w.]*\w))")
ITEM = re.compile(r"([A-Z][\w\- ]*?)(?: (\{[^}]*\}))?; ")  # `Kettle {'color': 'black'}; ` or `Kettle; `
ITEM_CHANGE = re.compile(r"([A-Z][\w\- ]*?) (\{[^}]*\}) to (\{[^}]*\})")
WRITE_STATUS = {
    "cancel_pending_order": "cancelled",
    "return_delivered_order_items": "return requested",
    "exchange_delivered_order_items": "exchange requested",
    "modify_pending_order_items": "pending (item modified)",
    "modify_pending_order_address": "pending",
    "modify_pending_order_payment": "pending",
    "modify_user_address": "updated",
    "transfer_to_human_agents": "transferred",
    "cancel_reservation": "cancelled",
    "book_reservation": "booked",
    "update_reservation_flights": "updated",
    "update_reservation_baggages": "updated",
    "update_reservation_passengers": "updated",
    "send_certificate": "sent",
}


def _retail_task(raw: dict[str, Any], task_id: str) -> Task | None:
    """Authenticate (by email, else name + zip), then the gold actions, one intent per message."""
    actions = [a for a in raw["actions"] if not a["name"].startswith("find_user_id")]
    auth = next((a for a in raw["actions"] if a["name"].startswith("find_user_id")), None) or _auth_from(raw)
    if auth is None or not actions:
        return None
    items = _item_names(raw["instruction"])
    user_id = next(iter(_values(actions, "user_id")), raw["user_id"])  # a few test tasks disagree

    def result(action: Action) -> Any:
        return _retail_result(action, user_id, raw["actions"])

    return _build_task(raw, task_id, auth, _identity(auth), actions, lambda a: _retail_sentence(a, items), result)


def _auth_from(raw: dict[str, Any]) -> Action | None:
    """The lookup tau-bench's policy asks for first, from the identity the instruction gives."""
    match = IDENTITY.search(raw["instruction"])
    if not match:
        return None
    first, last, zip_code, email = match.groups()
    if email:
        return {"name": "find_user_id_by_email", "kwargs": {"email": email}}
    return {"name": "find_user_id_by_name_zip", "kwargs": {"first_name": first, "last_name": last, "zip": zip_code}}


def _identity(auth: Action) -> str:
    kw = auth["kwargs"]
    if "email" in kw:
        return f"My email is {kw['email']}."
    return f"My name is {kw['first_name']} {kw['last_name']} and my zip code is {kw['zip']}."


def _item_names(instruction: str) -> dict[tuple[str, str], list[tuple[str, str, str | None]]]:
    """Item descriptions per (action kind, order id), parsed from the synthetic instruction grammar.

    `Return #W1 via pm: Kettle; Clock {...};` -> ("return", "#W1"): [(name, options, None), ...];
    `For #W1, exchange Kettle {...} to {...}; via pm.` -> ("exchange", "#W1"): [(name, old, new)].
    Free-form (test split) instructions give none; items are then named by id only.
    """
    found: dict[tuple[str, str], list[tuple[str, str, str | None]]] = {}
    for order, body in re.findall(r"Return (#W\d+) via \S+: ((?:[A-Z][\w\- ]*(?: \{[^}]*\})?; )+)", instruction):
        found[("return", order)] = [(n, _options(old), None) for n, old in ITEM.findall(body)]
    for order, kind, body in re.findall(r"For (#W\d+), (exchange|modify) (.*?); via ", instruction):
        found[(kind, order)] = [(n, _options(old), _options(new)) for n, old, new in ITEM_CHANGE.findall(body)]
    return found


def _options(literal: str) -> str:
    """`{'color': 'black', 'size': 'L'}` -> `black, L`."""
    return ", ".join(re.findall(r":\s*'([^']*)'", literal))


def _items_phrase(kind: str, kwargs: dict[str, Any], items: dict) -> str:
    """`the Kettle (item 1: black) for item 2 (white)`, or by ids only when names are unknown."""
    old, new = kwargs["item_ids"], kwargs.get("new_item_ids")
    named = items.get((kind, kwargs["order_id"]), [])
    if len(named) != len(old):
        named = [(None, None, None)] * len(old)
    parts = []
    for i, (name, old_options, new_options) in enumerate(named):
        what = f"the {name} (item {old[i]}{': ' + old_options if old_options else ''})" if name else f"item {old[i]}"
        if new:
            what += f" for item {new[i]} ({new_options or 'same options'})" if name else f" for item {new[i]}"
        parts.append(what)
    return _joined(parts)


def _address(kw: dict[str, Any]) -> str:
    lines = [kw["address1"], kw["address2"], kw["city"], kw["state"], kw["country"], kw["zip"]]
    return ", ".join(line for line in lines if line)


def _retail_sentence(action: Action, items: dict) -> str:
    kw, name = action["kwargs"], action["name"]
    order = kw.get("order_id")
    if name == "return_delivered_order_items":
        return (f"I'd like to return {_items_phrase('return', kw, items)} from my delivered order {order}, "
                f"with the refund going to {kw['payment_method_id']}.")
    if name == "exchange_delivered_order_items":
        return (f"I want to exchange {_items_phrase('exchange', kw, items)} in my delivered order {order}; "
                f"please use {kw['payment_method_id']} for any price difference.")
    if name == "modify_pending_order_items":
        return (f"Please modify the items in my pending order {order}: {_items_phrase('modify', kw, items)}. "
                f"Use {kw['payment_method_id']} for the price difference.")
    if name == "cancel_pending_order":
        return f"Please cancel my pending order {order}, because {CANCEL_REASONS[kw['reason']]}."
    if name == "modify_pending_order_payment":
        return f"Please change the payment method of my pending order {order} to {kw['payment_method_id']}."
    if name == "modify_pending_order_address":
        return f"Please change the shipping address of my pending order {order} to {_address(kw)}."
    if name == "modify_user_address":
        return f"Please update the default address on my account to {_address(kw)}."
    if name == "get_order_details":
        return f"Can you check the status and details of my order {order}?"
    if name == "get_product_details":
        return f"Can you look up the inventory details of product {kw['product_id']} for me?"
    if name == "get_user_details":
        return "Can you pull up my account details and orders?"
    if name == "list_all_product_types":
        return "Can you list for me all the product types you sell?"
    if name == "calculate":
        return f"Could you calculate {kw['expression']} for me?"
    if name == "transfer_to_human_agents":
        return "I'd like to be transferred to a human agent."
    raise KeyError(f"no wording for retail action {name!r}")


def _retail_result(action: Action, user_id: str, actions: list[Action]) -> Any:
    """What the tool would return: the ids later steps need, and the state a write leaves."""
    kw, name = action["kwargs"], action["name"]
    if name.startswith("find_user_id"):
        return {"user_id": user_id}
    if name == "get_user_details":
        return {"user_id": user_id, "orders": _values(actions, "order_id"),
                "payment_methods": _values(actions, "payment_method_id")}
    if name == "get_order_details":
        on_order = [a for a in actions if a["kwargs"].get("order_id") == kw["order_id"] and _is_write(a)]
        delivered = any(a["name"].endswith("delivered_order_items") for a in on_order)
        return {"order_id": kw["order_id"], "user_id": user_id,
                "status": "delivered" if delivered else "pending", "item_ids": _values(on_order, "item_ids")}
    if name == "get_product_details":
        return {"product_id": kw["product_id"], "item_ids": _values(actions, "new_item_ids")}
    if name == "list_all_product_types":
        return {"product_ids": _values(actions, "product_id")}
    if name == "calculate":
        return _calculate(kw["expression"])
    return {**_said_values(kw), "user_id": user_id, "status": WRITE_STATUS[name]}


# ---- airline --------------------------------------------------------------------------------


def _airline_task(raw: dict[str, Any], task_id: str) -> Task | None:
    """Identify by user id (`get_user_details` first), then the gold actions, one intent per message."""
    user_id = raw["user_id"]
    auth = {"name": "get_user_details", "kwargs": {"user_id": user_id}}
    actions = [a for a in raw["actions"] if a != auth]
    if not actions:
        return None  # the right answer is a refusal in words: nothing for a tool chooser to learn

    def result(action: Action) -> Any:
        return _airline_result(action, user_id, raw["actions"], task_id)

    return _build_task(raw, task_id, auth, f"My user id is {user_id}.", actions, _airline_sentence, result)


def _flights(flights: list[dict[str, str]]) -> str:
    return _joined([f"{f['flight_number']} on {f['date']}" for f in flights])


def _passengers(passengers: list[dict[str, str]]) -> str:
    return _joined([f"{p['first_name']} {p['last_name']} (date of birth {p['dob']})" for p in passengers])


def _airline_sentence(action: Action) -> str:
    kw, name = action["kwargs"], action["name"]
    reservation = kw.get("reservation_id")
    if name == "get_reservation_details":
        return f"Could you pull up the details of my reservation {reservation}?"
    if name == "search_direct_flight":
        return f"Please search direct flights for me from {kw['origin']} to {kw['destination']} on {kw['date']}."
    if name == "calculate":
        return f"Could you calculate {kw['expression']} for me?"
    if name == "cancel_reservation":
        return f"Please cancel my whole reservation {reservation}."
    if name == "update_reservation_flights":
        return (f"For my reservation {reservation}, please update the flights to {kw['cabin']} cabin: "
                f"{_flights(kw['flights'])}; use {kw['payment_id']} for any fare difference.")
    if name == "update_reservation_baggages":
        return (f"For my reservation {reservation}, please update the baggage to {kw['total_baggages']} checked bags "
                f"in total, {kw['nonfree_baggages']} of them non-free, paid with {kw['payment_id']}.")
    if name == "update_reservation_passengers":
        return f"For my reservation {reservation}, please update the passengers to {_passengers(kw['passengers'])}."
    if name == "book_reservation":
        payments = _joined([f"{p['amount']} with {p['payment_id']}" for p in kw["payment_methods"]])
        return (f"I'd like to book a {kw['flight_type']} trip from {kw['origin']} to {kw['destination']} in "
                f"{kw['cabin']} cabin: {_flights(kw['flights'])}, for {_passengers(kw['passengers'])}. "
                f"Please pay {payments}. I'll have {kw['total_baggages']} checked bags in total, "
                f"{kw['nonfree_baggages']} of them non-free, and insurance: {kw['insurance']}.")
    if name == "send_certificate":
        return f"As compensation, I'd like a certificate of {kw['amount']} sent to my account."
    if name == "transfer_to_human_agents":
        return "I'd like to be transferred to a human agent."
    raise KeyError(f"no wording for airline action {name!r}")


def _airline_result(action: Action, user_id: str, actions: list[Action], task_id: str) -> Any:
    """What the tool would return: the ids later steps need, and the state a write leaves."""
    kw, name = action["kwargs"], action["name"]
    if name == "get_user_details":
        return {"user_id": user_id, "reservations": _values(actions, "reservation_id"),
                "payment_methods": _values(actions, "payment_id")}
    if name == "get_reservation_details":
        return {"reservation_id": kw["reservation_id"], "user_id": user_id}
    if name == "search_direct_flight":
        flights = [f for a in actions for f in a["kwargs"].get("flights", []) if f["date"] == kw["date"]]
        return [{"flight_number": f["flight_number"], **kw} for f in flights]
    if name == "calculate":
        return _calculate(kw["expression"])
    if name == "book_reservation":
        reservation = hashlib.sha256(task_id.encode()).hexdigest()[:6].upper()
        return {"reservation_id": reservation, **_said_values(kw), "status": WRITE_STATUS[name]}
    return {**_said_values(kw), "status": WRITE_STATUS[name]}


# --------------------------------------------------------------------------------------------
# BFCL
# --------------------------------------------------------------------------------------------

# Data analysis in a broad sense, matched against a function's name and description: statistics,
# number theory and algebra, arithmetic, finance calculations and market data, unit and currency
# conversion. Geometry and physics formulas are left out (they would double the toolbox).
DATA_ANALYSIS = re.compile(
    r"\b(mean|median|standard deviation|variance|regression|correlation|t-test|hypothesis|probabilit\w*|"
    r"binomial|normal distribution|histogram|"
    r"greatest common|highest common|least common|gcd|lcm|factorial|prime factor\w*|quadratic|derivative|integral|"
    r"multipl(?:y|ies|ication)|product of|sum of|subtract\w*|addition of two|"
    r"compound interest|simple interest|annual growth|return on \w+|net present|npv|future value|present value|"
    r"dividend\w*|depreciat\w*|stock prices?|closing price|"
    r"exchange rate|currency conversion|convert\w* .{0,20}currenc\w*|unit conversion|measurements?)\b",
    re.I,
)
BFCL_CATEGORIES = ["simple_python", "multiple", "live_simple", "live_multiple"]  # the single-call ones
BFCL_TYPES = {"dict": "object", "float": "number", "tuple": "array", "any": "string"}
SCHEMA_KEYS = {"type", "description", "enum", "default", "items", "properties", "required", "format", "maximum"}
BFCL_SYSTEM_PROMPT = (
    "You are a data analysis assistant. Use the available tools for statistics, math, finance "
    "calculations, market data and unit or currency conversions, then answer the user briefly."
)


def bfcl(categories: list[str] | None = None, limit: int | None = None, seed: int = 0) -> dict[str, Any]:
    """A data-analysis toolbox pooled from BFCL single-call items, one task per distinct question.

    Items qualify when their gold function matches DATA_ANALYSIS and every required argument
    value appears verbatim in the question (the same question in two categories is kept once).
    Tools: the chosen items' gold functions plus their other candidates that match DATA_ANALYSIS
    too (near-duplicates nobody should call). `seed` shuffles the tasks, so `limit` takes a sample.
    By default all four single-call categories: `multiple` and `live_multiple` alone give fewer
    than 50 qualifying items.
    """
    schemas: dict[str, dict[str, Any]] = {}  # first schema per tool name, in data order
    chosen: dict[str, tuple[Task, list[str]]] = {}  # question -> task, its in-topic candidates
    for category in categories or BFCL_CATEGORIES:
        for item, answer in bfcl_items(category):
            task = _bfcl_task(item, answer, schemas)
            if task and task.user not in chosen:
                chosen[task.user] = (task, [tool_name(f["name"]) for f in item["function"] if _about_data(f)])
    picked = list(chosen.values())
    random.Random(seed).shuffle(picked)
    picked = picked[:limit]
    offered = {name for task, near in picked for name in [*near, *(step.tool for step in task.steps)]}
    tools = [tool for name, tool in schemas.items() if name in offered]
    return {"system_prompt": BFCL_SYSTEM_PROMPT, "tools": tools, "tasks": [_with_equivalents(task, tools) for task, _ in picked]}


# words that say how a tool is framed, not what it computes
GENERIC_WORDS = frozenset("get calc calculate compute find fetch retrieve math solve roots equation algebra run stats".split())


def _with_equivalents(task: Task, tools: list[dict[str, Any]]) -> Task:
    """The task with its step's duplicates in the pool (`calculate_gcd`, `math_gcd`, `number_theory_gcd`).

    Two tools are duplicates when they require the same parameters and their names differ only in
    framing words (`math_roots_quadratic`, `solve_quadratic_equation`), or when their names end in the same word (up to a plural or -ize:
    `factors`, `factorize`; or an abbreviation: `prob`, `probability`), and the shorter name's other words are all in the longer's (the environment still wants
    every value the task needs, under whatever parameter names the duplicate has): pooling BFCL items puts several such APIs side by side, and
    any of them, given the right values, computes the user's answer.
    """
    step = task.steps[0]
    gold = next(t["function"] for t in tools if t["function"]["name"] == step.tool)
    same = [t["function"]["name"] for t in tools if t["function"]["name"] != step.tool and _duplicates(gold, t["function"])]
    return task.model_copy(update={"steps": [step.model_copy(update={"equivalents": same})]}) if same else task


def _duplicates(a: dict[str, Any], b: dict[str, Any]) -> bool:
    def stem(word: str) -> str:
        return re.sub(r"(?:ize|s)$", "", word)

    def family(x: str, y: str) -> bool:
        short, long = sorted((x, y), key=len)
        return stem(x) == stem(y) or (len(short) == 4 and long.startswith(short))

    words_a, words_b = (re.findall(r"[a-z]+", f["name"].lower()) for f in (a, b))
    required_a, required_b = (set(f["parameters"].get("required") or ()) for f in (a, b))
    if required_a and required_a == required_b and set(words_a) - GENERIC_WORDS == set(words_b) - GENERIC_WORDS:
        return True  # math_roots_quadratic(a, b, c), solve_quadratic_equation(a, b, c)
    if not family(words_a[-1], words_b[-1]):
        return False
    rest_a, rest_b = (set(w[:4] for w in words[:-1]) - GENERIC_WORDS for words in (words_a, words_b))
    return rest_a <= rest_b or rest_b <= rest_a


def bfcl_items(category: str) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(question entry, ground-truth entry) pairs; both files are JSON Lines in the same id order."""
    folder = data_dir() / "bfcl_v4"
    questions = (folder / f"BFCL_v4_{category}.json").read_text().splitlines()
    answers = (folder / "possible_answer" / f"BFCL_v4_{category}.json").read_text().splitlines()
    for question, answer in zip(questions, answers, strict=True):
        yield orjson.loads(question), orjson.loads(answer)


def _about_data(function: dict[str, Any]) -> bool:
    return bool(DATA_ANALYSIS.search(f"{function['name'].replace('_', ' ')} {function['description']}"))


def _bfcl_task(item: dict[str, Any], answer: dict[str, Any], schemas: dict[str, dict[str, Any]]) -> Task | None:
    """The item as a one-step task, its candidates' schemas added to `schemas` (first per name wins)."""
    if len(answer["ground_truth"]) != 1:
        return None
    ((gold, accepted),) = answer["ground_truth"][0].items()
    function = next(f for f in item["function"] if f["name"] == gold)
    question = " ".join(m["content"] for turn in item["question"] for m in turn if m["role"] == "user").strip()
    arguments = _gold_arguments(accepted, question)
    if not _about_data(function) or not arguments:
        return None
    for candidate in item["function"]:
        schemas.setdefault(tool_name(candidate["name"]), openai_tool(candidate))
    offered = schemas[tool_name(gold)]["function"]["parameters"].get("properties", {})
    if not set(arguments) <= set(offered):
        return None  # an earlier item's schema of the same name won, and it lacks these parameters
    step = {"tool": tool_name(gold), "arguments": arguments, "result": {"status": "success", "inputs": arguments}}
    return Task(id=item["id"], user=question, steps=[step])


def _gold_arguments(accepted: dict[str, list[Any]], question: str) -> dict[str, Any] | None:
    """Required parameters (no "" among accepted values), each the first value said in the question."""
    arguments = {}
    for name, values in accepted.items():
        if "" in values:
            continue
        said = [v for v in values if _said(v, question)]
        if not said:
            return None
        arguments[name] = said[0]
    return arguments


def _said(value: Any, text: str) -> bool:
    """Mirrors `Task.unreachable_arguments`: every (list) item's str() is in the text."""
    return all(isinstance(v, bool) or str(v) in text for v in (value if isinstance(value, list) else [value]))


def tool_name(name: str) -> str:
    """OpenAI function names allow no dots."""
    return name.replace(".", "_")


def openai_tool(function: dict[str, Any]) -> dict[str, Any]:
    return {"type": "function", "function": {"name": tool_name(function["name"]),
                                             "description": function["description"],
                                             "parameters": _json_schema(function["parameters"])}}


def _json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """BFCL's Python-ish schema as JSON Schema: standard type names, only standard keys."""
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key not in SCHEMA_KEYS:
            continue
        if key == "type":
            value = BFCL_TYPES.get(value, value)
        elif key == "properties":
            value = {name: _json_schema(prop) for name, prop in value.items()}
        elif key == "items":
            value = _json_schema(value)
        out[key] = value
    return out
