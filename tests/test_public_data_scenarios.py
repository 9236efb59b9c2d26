"""The scenarios built from public benchmark data (tau-bench, BFCL) load, and a simulator can play them.

The simulated model sees only the conversation, so every checked argument must be said by the user
or returned by an earlier step; the user must speak as themself; and building is pure: the same
scenario every time, nothing written anywhere.
"""

from __future__ import annotations

import builtins
import io
import os
import re

import orjson
import pytest

from agentgym.scenarios import public_data
from agentgym.scenarios.scenario import LIBRARY, Scenario, data_dir, load_scenario

NAMES = ["customer_support", "airline", "data_analysis"]
TAU = {"customer_support": "retail", "airline": "airline"}
# airline: tau-bench has 50 airline tasks; 7 have no gold action and 1 only looks the user up
# (the right answer is a refusal in words), which leaves 42.
MIN_TASKS = {"customer_support": 500, "airline": 42, "data_analysis": 50}
FIRST_PERSON = re.compile(r"\b(I|I'd|I'll|I'm|my|me)\b")


@pytest.fixture(scope="module")
def scenarios() -> dict[str, Scenario]:
    return {name: load_scenario(name) for name in NAMES}


def messages(task) -> list[str]:
    return [task.user, *task.follow_ups]


@pytest.mark.parametrize("name", NAMES)
def test_loads_with_a_real_toolbox_and_enough_distinct_tasks(scenarios, name):
    scenario = scenarios[name]
    assert scenario.name == name
    assert len(scenario.tools) >= 12
    assert len(scenario.tasks) >= MIN_TASKS[name]
    assert len({task.id for task in scenario.tasks}) == len(scenario.tasks)
    distinct = {orjson.dumps([s.model_dump() for s in task.steps]) for task in scenario.tasks}
    assert len(distinct) >= 0.9 * len(scenario.tasks)
    assert all(task.steps for task in scenario.tasks)
    assert "License" in scenario.source


@pytest.mark.parametrize("name", NAMES)
def test_every_checked_argument_is_said_before_it_is_needed(scenarios, name):
    unreachable = {task.id: task.unreachable_arguments() for task in scenarios[name].tasks}
    assert {k: v for k, v in unreachable.items() if v} == {}
    assert any(step.arguments for task in scenarios[name].tasks for step in task.steps)


@pytest.mark.parametrize("name", NAMES)
def test_every_step_uses_an_offered_tool(scenarios, name):
    offered = set(scenarios[name].tool_names)
    assert {step.tool for task in scenarios[name].tasks for step in task.steps} <= offered


@pytest.mark.parametrize("name", NAMES)
def test_no_user_message_narrates_a_persona(scenarios, name):
    for task in scenarios[name].tasks:
        for message in messages(task):
            assert message.strip()
            assert "You are" not in message and "Your name" not in message, task.id


@pytest.mark.parametrize("name", ["customer_support", "airline"])
def test_tau_users_speak_in_first_person_one_message_per_request(scenarios, name):
    for task in scenarios[name].tasks:
        for message in messages(task):
            assert FIRST_PERSON.search(message), (task.id, message)
        writes = [s for s in task.steps if s.tool.startswith(public_data.WRITE_PREFIXES)]
        assert len(task.follow_ups) <= max(len(writes), 1)


@pytest.mark.parametrize("name", ["customer_support", "airline"])
def test_tau_tools_and_policy_are_the_benchmark_own(scenarios, name):
    domain = TAU[name]
    folder = data_dir() / "tau_bench"
    assert scenarios[name].tools == orjson.loads((folder / f"{domain}_tools.json").read_bytes())
    policy = orjson.loads((folder / f"{domain}_policy.json").read_bytes())["text"]
    assert scenarios[name].system_prompt == policy


def test_retail_tasks_authenticate_first_and_hand_the_user_id_on(scenarios):
    for task in scenarios["customer_support"].tasks:
        first = task.steps[0]
        assert first.tool in ("find_user_id_by_email", "find_user_id_by_name_zip")
        assert set(first.result) == {"user_id"}
        assert all(step.tool != first.tool for step in task.steps[1:])


def test_retail_item_ids_come_with_item_names(scenarios):
    task = next(t for t in scenarios["customer_support"].tasks if t.id == "retail-train-0")
    assert "the Electric Kettle (item 9624127908)" in task.user
    assert "Omar Anderson" in task.user and "19031" in task.user
    assert "logical" not in task.user  # personality phrases are dropped


def test_airline_tasks_start_from_the_user_profile(scenarios):
    for task in scenarios["airline"].tasks:
        assert task.steps[0].tool == "get_user_details"
        assert task.steps[0].arguments["user_id"] in task.user


@pytest.mark.parametrize("split", ["dev", "test"])
def test_other_retail_splits_are_playable_too(split):
    tasks = public_data.tau_bench("retail", split)["tasks"]
    assert tasks
    assert [t.id for t in tasks if t.unreachable_arguments()] == []


def test_bfcl_tools_are_valid_openai_schemas(scenarios):
    python_types = {"dict", "float", "tuple", "any"}

    def types(schema):
        if isinstance(schema, dict):
            if isinstance(schema.get("type"), str):
                yield schema["type"]
            for value in schema.values():
                yield from types(value)

    for tool in scenarios["data_analysis"].tools:
        function = tool["function"]
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", function["name"])
        parameters = function["parameters"]
        assert parameters["type"] == "object"
        assert not python_types & set(types(parameters))
        assert "optional" not in orjson.dumps(parameters).decode()
        assert set(parameters.get("required", [])) <= set(parameters.get("properties", {}))


def test_bfcl_tasks_are_the_questions_with_their_gold_call(scenarios):
    scenario = scenarios["data_analysis"]
    assert len({task.user for task in scenario.tasks}) == len(scenario.tasks)
    for task in scenario.tasks:
        assert len(task.steps) == 1
        properties = next(t for t in scenario.tools if t["function"]["name"] == task.steps[0].tool)
        assert set(task.steps[0].arguments) <= set(properties["function"]["parameters"]["properties"])
    used = {step.tool for task in scenario.tasks for step in task.steps}
    assert len(used) < len(scenario.tools)  # near-duplicates nobody should call are offered too


def test_bfcl_duplicates_serve_each_other_and_look_alikes_do_not(scenarios):
    """Pooled BFCL items put several APIs for one computation side by side; any of them answers it."""
    equivalents = {task.steps[0].tool: set(task.steps[0].equivalents) for task in scenarios["data_analysis"].tasks}
    assert {"number_theory_gcd", "calculate_gcd"} <= equivalents["math_gcd"]
    assert {"solve_quadratic_equation", "algebra_quadratic_roots"} <= equivalents["math_roots_quadratic"]
    assert equivalents["calculate_binomial_probability"] == {"calc_binomial_prob"}
    assert not any(tool.startswith("math_factorial") for tool in equivalents.get("prime_factorize", ()))
    assert "calculate_lcm" not in equivalents["math_gcd"] and "latest_exchange_rate" not in equivalents.get(
        "currency_conversion_get_rate", ())


def test_bfcl_limit_and_seed_sample_the_tasks():
    full = public_data.bfcl()
    sample = public_data.bfcl(limit=10, seed=1)
    assert len(sample["tasks"]) == 10
    assert {t.id for t in sample["tasks"]} <= {t.id for t in full["tasks"]}
    assert [t.id for t in sample["tasks"]] != [t.id for t in public_data.bfcl(limit=10, seed=2)["tasks"]]
    assert len(sample["tools"]) < len(full["tools"])


@pytest.mark.parametrize("name", NAMES)
def test_building_is_deterministic(name):
    assert load_scenario(name).model_dump() == load_scenario(name).model_dump()


def test_unknown_tau_split_is_refused():
    with pytest.raises(ValueError):
        public_data.tau_bench("airline", "train")


def test_loading_writes_nothing(monkeypatch):
    """Data is read where it lies; no file is opened for writing (the library holds only YAML)."""
    real_open, real_os_open = builtins.open, os.open
    written: list[str] = []

    def guarded_open(file, mode="r", *args, **kwargs):
        if any(flag in mode for flag in "wax+"):
            written.append(str(file))
        return real_open(file, mode, *args, **kwargs)

    def guarded_os_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            written.append(str(path))
        return real_os_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)
    monkeypatch.setattr(io, "open", guarded_open)
    monkeypatch.setattr(os, "open", guarded_os_open)
    for name in NAMES:
        load_scenario(name)
    assert written == []
    assert {p.suffix for p in LIBRARY.iterdir() if p.is_file()} <= {".yaml", ".yml"}
