"""The authored library scenarios (code review, QA/testing, email/calendar) are well-formed and solvable.

Solvable means what the simulated model needs is there: every checked argument value can be found in the
conversation, id-like parameters carry a `such as '...'` example shaped like the real values, enum values
are the schema's, and the tool set is large and confusable enough (near-duplicates, distractors) to be worth
learning a selection policy for.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from typing import Any

import pytest

from agentgym.scenarios.scenario import LIBRARY, Scenario, load_scenario

NAMES = ["code_review", "qa_testing", "email_automation"]
OPENAI_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
EXAMPLE = re.compile(r"such as '([^']+)'")
EMAIL = re.compile(r"^[\w.+-]+@[\w-]+(\.[\w-]+)+$")
# Verbs and fillers every API shares; two tools that share only these are not near-duplicates.
GENERIC = {"get", "list", "create", "add", "remove", "update", "set", "delete", "send", "run", "to", "from", "of",
           "for", "by", "in", "on", "the", "a", "all"}


@pytest.fixture(scope="module", params=NAMES)
def scenario(request: pytest.FixtureRequest) -> Scenario:
    return load_scenario(request.param)


def functions(scenario: Scenario) -> dict[str, dict[str, Any]]:
    return {t["function"]["name"]: t["function"] for t in scenario.tools}


def string_params(scenario: Scenario):
    """(tool, parameter, spec, item spec) for every string parameter, arrays of strings included."""
    for name, fn in functions(scenario).items():
        for param, spec in fn["parameters"]["properties"].items():
            if spec.get("type") == "string":
                yield name, param, spec, spec
            elif spec.get("type") == "array" and spec.get("items", {}).get("type") == "string":
                yield name, param, spec, spec["items"]


def shape(text: str) -> str:
    """Letters collapse to runs (A / a), digits count one by one, punctuation stays: 'PR-1234' -> 'A-9999'."""
    out: list[str] = []
    for ch in text:
        cls = "A" if ch.isupper() else "a" if ch.islower() else "9" if ch.isdigit() else ch
        if not (cls in "Aa" and out and out[-1] == cls):
            out.append(cls)
    return "".join(out)


def name_tokens(name: str) -> set[str]:
    return {token.removesuffix("s") for token in name.lower().split("_")} - GENERIC


def near_duplicate_pairs(scenario: Scenario) -> dict[tuple[str, str], set[str]]:
    pairs = {}
    for a, b in itertools.combinations(scenario.tool_names, 2):
        shared = name_tokens(a) & name_tokens(b)
        if shared:
            pairs[(a, b)] = shared
    return pairs


def test_the_library_holds_each_file_under_its_name():
    for name in NAMES:
        assert (LIBRARY / f"{name}.yaml").is_file()
        assert load_scenario(name).name == name


def test_metadata_reward_and_training_are_set(scenario: Scenario):
    assert scenario.source == "authored for AgentGym"
    assert scenario.title and scenario.description
    assert len(scenario.system_prompt) > 200 and "Policy" in scenario.system_prompt
    assert scenario.reward.success == 1.0 and scenario.reward.failure == 0.0
    assert scenario.reward.tool_error < 0 and scenario.reward.per_1k_prompt_tokens < 0
    assert scenario.training.episodes == 3000
    assert scenario.training.top_k in (4, 5)
    assert scenario.training.top_k < len(scenario.tools)


def test_tools_are_many_valid_and_uniquely_named(scenario: Scenario):
    names = scenario.tool_names
    assert len(names) >= 14
    assert len(set(names)) == len(names)
    for tool in scenario.tools:
        assert tool["type"] == "function"
        fn = tool["function"]
        assert OPENAI_NAME.match(fn["name"]), fn["name"]
        assert len(fn["description"]) >= 20, fn["name"]
        params = fn["parameters"]
        assert params["type"] == "object"
        assert set(params["required"]) <= set(params["properties"]), fn["name"]
        for param, spec in params["properties"].items():
            assert spec.get("type") in {"string", "integer", "number", "boolean", "array", "object"}, (fn["name"], param)
            assert spec.get("description"), (fn["name"], param)


def test_every_free_string_parameter_gives_an_example(scenario: Scenario):
    missing = [f"{tool}.{param}" for tool, param, spec, item in string_params(scenario)
               if "enum" not in item and not EXAMPLE.search(spec.get("description", "") + " " + item.get("description", ""))]
    assert missing == []


def test_there_are_near_duplicate_tools_and_distractors(scenario: Scenario):
    pairs = near_duplicate_pairs(scenario)
    assert len(pairs) >= 3, pairs
    # not one family only: at least three different shared words make tools look alike
    assert len(set().union(*pairs.values())) >= 3, pairs
    # some offered tools are never the answer (distractors), and the answers use many different tools
    gold = {step.tool for task in scenario.tasks for step in task.steps}
    assert len(set(scenario.tool_names) - gold) >= 2
    assert len(gold) >= 14


def test_tasks_are_many_and_distinct(scenario: Scenario):
    assert len(scenario.tasks) >= 60
    ids = [task.id for task in scenario.tasks]
    assert len(set(ids)) == len(ids)
    users = [task.user.strip().lower() for task in scenario.tasks]
    assert len(set(users)) == len(users)
    assert all(task.steps for task in scenario.tasks)


def test_tasks_mix_lengths_and_follow_ups(scenario: Scenario):
    lengths = Counter(len(task.steps) for task in scenario.tasks)
    assert lengths[1] >= 20 and lengths[2] >= 15 and lengths[3] >= 4, lengths
    assert max(lengths) <= 4
    with_follow_ups = [task for task in scenario.tasks if task.follow_ups]
    assert len(with_follow_ups) >= 3
    # a follow-up is only sent while gold steps remain
    assert all(len(task.follow_ups) < len(task.steps) for task in with_follow_ups)


def test_every_checked_argument_is_reachable(scenario: Scenario):
    unreachable = {task.id: task.unreachable_arguments() for task in scenario.tasks}
    assert {k: v for k, v in unreachable.items() if v} == {}


def test_checked_arguments_fit_the_schema(scenario: Scenario):
    fns = functions(scenario)
    problems = []
    for task in scenario.tasks:
        for step in task.steps:
            props = fns[step.tool]["parameters"]["properties"]
            for param, value in step.arguments.items():
                spec = props.get(param)
                if spec is None:
                    problems.append(f"{task.id}: {step.tool} has no parameter {param}")
                    continue
                if spec["type"] == "array":
                    if not isinstance(value, list) or not value:
                        problems.append(f"{task.id}: {step.tool}.{param} should be a non-empty list")
                        continue
                    item_spec, items = spec["items"], value
                else:
                    item_spec, items = spec, [value]
                for item in items:
                    problems.extend(f"{task.id}: {step.tool}.{param}={item!r}: {why}"
                                    for why in _mismatch(item_spec, spec, item))
    assert problems == []


def _mismatch(item_spec: dict[str, Any], spec: dict[str, Any], value: Any) -> list[str]:
    kind = item_spec["type"]
    if kind == "integer":
        return [] if isinstance(value, int) and not isinstance(value, bool) else ["not an integer"]
    if kind == "boolean":
        return [] if isinstance(value, bool) else ["not a boolean"]
    if kind != "string" or not isinstance(value, str):
        return [f"not a {kind}"]
    if "enum" in item_spec:
        return [] if value in item_spec["enum"] else ["not one of the enum values"]
    example = EXAMPLE.search(spec.get("description", "") + " " + item_spec.get("description", ""))
    if example is None:
        return ["no example to extract it by"]
    if EMAIL.match(example.group(1)):
        return [] if EMAIL.match(value) else ["not an email address"]
    if shape(value) != shape(example.group(1)):
        return [f"shape {shape(value)} differs from the example {example.group(1)!r} ({shape(example.group(1))})"]
    return []


def test_steps_return_json_results(scenario: Scenario):
    for task in scenario.tasks:
        for step in task.steps:
            assert isinstance(step.result, dict) and step.result, (task.id, step.tool)


def test_shape_and_name_token_helpers():
    assert shape("PR-1234") == shape("PR-8765") == "A-9999"
    assert shape("PR-123") != shape("PR-1234")
    assert shape("acme/payments") == shape("octo/api") == "a/a"
    assert name_tokens("list_pull_requests") == {"pull", "request"}
    assert name_tokens("send_email_draft") & name_tokens("create_email_draft") == {"email", "draft"}
    assert not name_tokens("get_weather") & name_tokens("get_order")
