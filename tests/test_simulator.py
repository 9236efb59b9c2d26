"""The simulated model and the scenario environment: behaviour that learning results rely on."""

from __future__ import annotations

import asyncio
import random
import sys
import textwrap

import orjson
import pytest

from agentgym.scenarios.agents import run_episode
from agentgym.scenarios.environment import Environment
from agentgym.scenarios.scenario import Step, Task, load_scenario
from agentgym.scenarios import simulated_model
from agentgym.scenarios.arguments import fill_arguments
from agentgym.scenarios.simulated_model import ModelKnobs, SimulatedModel

TASK = Task(
    id="t",
    user="Hi, I'm Omar Anderson, zip 19031. Please cancel order #W6067464.",
    steps=[Step(tool="find_user_id_by_name_zip", arguments={"first_name": "Omar", "zip": "19031"},
                result={"user_id": "omar_anderson_3203"}),
           Step(tool="cancel_pending_order", arguments={"order_id": "#W6067464"}, result={"status": "cancelled"})],
)


def test_the_environment_answers_like_a_backend():
    env = Environment(TASK)
    ok, content = env.execute("cancel_pending_order", '{"order_id": "#W6067464"}')
    assert not ok and "find_user_id_by_name_zip must succeed first" in content
    ok, content = env.execute("find_user_id_by_name_zip", '{"first_name": "Omar", "zip": "99999"}')
    assert not ok and orjson.loads(content) == {"error": "zip '99999' not found"}
    ok, content = env.execute("find_user_id_by_name_zip", '{"first_name": "omar", "zip": 19031, "extra": 1}')
    assert ok and orjson.loads(content) == {"user_id": "omar_anderson_3203"}  # case and type tolerant, like APIs
    ok, content = env.execute("get_order_details", '{"order_id": "#W6067464"}')
    assert not ok and "not one it can serve" in content
    ok, content = env.execute("cancel_pending_order", "{not json")
    assert not ok and "invalid arguments" in content
    assert not env.complete
    assert env.execute("cancel_pending_order", '{"order_id": "#W6067464"}')[0] and env.complete


def test_arguments_are_read_from_the_conversation():
    schema = {"type": "object", "required": ["order_id", "item_ids", "new_item_ids", "payment_method_id"],
              "properties": {"order_id": {"type": "string", "description": "The order id, such as '#W0000000'."},
                             "item_ids": {"type": "array", "items": {"type": "string"},
                                          "description": "The item ids to be exchanged, each such as '1008292230'."},
                             "new_item_ids": {"type": "array", "items": {"type": "string"},
                                              "description": "The new item ids, each such as '1008292230'."},
                             "payment_method_id": {"type": "string",
                                                   "description": "such as 'gift_card_0000000' or 'credit_card_0000000'."}}}
    said = "Exchange item 9624127908 for item 8917609800 in order #W6067464, paying with paypal_3738584."
    assert fill_arguments(schema, said, latest=said) == {
        "order_id": "#W6067464", "item_ids": ["9624127908"], "new_item_ids": ["8917609800"],
        "payment_method_id": "paypal_3738584"}
    # an item kept as it is ("for item X (same options)") is in both lists, as tau-bench's gold actions have it
    said = ("Please modify the items in my pending order #W9318778: the Bicycle (item 2143041831: medium) for item "
            "5606522780 (large, red) and the Air Purifier (item 3076708684: HEPA) for item 3076708684 (same options). "
            "Use credit_card_7862034 for the price difference.")
    assert fill_arguments(schema, said, latest=said) == {
        "order_id": "#W9318778", "item_ids": ["2143041831", "3076708684"], "new_item_ids": ["5606522780", "3076708684"],
        "payment_method_id": "credit_card_7862034"}


def test_optional_arguments_are_given_when_the_conversation_names_them():
    schema = {"type": "object", "required": ["repo"],
              "properties": {"repo": {"type": "string", "description": "Repository, such as 'acme/payments'."},
                             "state": {"type": "string", "enum": ["open", "closed", "merged"]},
                             "merge_method": {"type": "string", "enum": ["merge", "squash", "rebase"]},
                             "labels": {"type": "array", "items": {"type": "string", "enum": ["bug", "hotfix"]}},
                             "author": {"type": "string", "description": "Login, such as 'j-okafor'."},
                             "days": {"type": "integer", "description": "How far back."}}}
    said = "Squash and merge the open one from acme/billing by m-chen, labelled hotfix, from the last 14 days."
    assert fill_arguments(schema, said, latest=said, tool_name="merge_pull_request") == {
        "repo": "acme/billing", "state": "open", "merge_method": "squash", "labels": ["hotfix"], "author": "m-chen",
        "days": 14}
    assert fill_arguments(schema, "Look at acme/billing.", latest="Look at acme/billing.") == {"repo": "acme/billing"}


def test_addresses_are_parsed_and_a_value_said_again_is_read_where_said_last():
    address = {"type": "object", "required": ["order_id", "address1", "address2", "city", "state", "country", "zip"],
               "properties": {"order_id": {"type": "string", "description": "The order id, such as '#W0000000'."},
                              **{k: {"type": "string", "description": f"The {k}, such as 'X'."}
                                 for k in ("address1", "address2", "city", "state", "country", "zip")}}}
    said = "Ship my pending order #W2912646 to 953 Park Avenue, Suite 613, New York, NY, USA, 10064."
    assert fill_arguments(address, said, latest=said) == {
        "order_id": "#W2912646", "address1": "953 Park Avenue", "address2": "Suite 613", "city": "New York",
        "state": "NY", "country": "USA", "zip": "10064"}
    # an address given with an earlier request, for a call the model makes after the user moved on
    later = "Also change the payment of that order to gift_card_1234567."
    assert fill_arguments(address, said + " \n " + later, latest=later) == {
        "order_id": "#W2912646", "address1": "953 Park Avenue", "address2": "Suite 613", "city": "New York",
        "state": "NY", "country": "USA", "zip": "10064"}
    # the order just asked about, though a tool result names another one closer to the words "order id"
    orders = {"type": "object", "required": ["order_id"],
              "properties": {"order_id": {"type": "string", "description": "The order id, such as '#W0000000'."}}}
    said = "Cancel order #W1111111. \n Now change the items in my order #W2222222, please."
    results = '{"order_id":"#W1111111","status":"cancelled"} {"order_id":"#W2222222","status":"pending"}'
    assert fill_arguments(orders, said, results, latest="Now change the items in my order #W2222222, please.") == {
        "order_id": "#W2222222"}


def test_values_go_to_parameters_in_the_order_said():
    dates = {"type": "object", "required": ["start_date", "end_date"],
             "properties": {"start_date": {"type": "string", "description": "First day, such as '2024-07-01'."},
                            "end_date": {"type": "string", "description": "Last day, such as '2024-07-12'."}}}
    said = "I'm away from 2024-08-05 to 2024-08-16."
    assert fill_arguments(dates, said, latest=said) == {"start_date": "2024-08-05", "end_date": "2024-08-16"}
    numbers = {"type": "object", "required": ["a", "b", "c"],
               "properties": {k: {"type": "integer", "description": "Coefficient"} for k in "abc"}}
    said = "Solve the quadratic with coefficients 2, 3 and -4."
    assert fill_arguments(numbers, said, latest=said) == {"a": 2, "b": 3, "c": -4}
    names = {"type": "object", "required": ["companies"],
             "properties": {"companies": {"type": "array", "items": {"type": "string"}}}}
    assert fill_arguments(names, "Prices of Apple and Microsoft?", latest="Prices of Apple and Microsoft?") == {
        "companies": ["Apple", "Microsoft"]}


def test_model_reads_questions_synonyms_and_missing_arguments(monkeypatch):
    scenario = load_scenario("code_review")
    model = SimulatedModel(ModelKnobs(temperature=1e-6), seed=0)
    ask = lambda text: _first_call(model, scenario.tools, [{"role": "user", "content": text}])["tool_calls"][0]
    question, synonym = "Did CI pass for PR-4848 (acme/billing)?", "Shut PR-6499 in acme/gateway, it was opened wrongly."
    assert ask(question)["function"]["name"] == "get_check_runs"  # a question: a tool that reads
    assert ask(synonym)["function"]["name"] == "close_pull_request"  # "shut" is close
    monkeypatch.setattr(simulated_model, "READ_BONUS", 0.0)
    monkeypatch.setattr(simulated_model, "SYNONYMS", {})
    assert ask(question)["function"]["name"] == "rerun_check_run"  # word overlap alone gets both wrong
    assert ask(synonym)["function"]["name"] != "close_pull_request"
    monkeypatch.undo()
    # told an argument is missing, it calls again with it (once), rather than giving up
    call = {"id": "c1", "type": "function", "function": {"name": "create_issue", "arguments": "{}"}}
    messages = [{"role": "user", "content": "Open an issue in acme/identity about the flaky login test, label it bug."},
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "c1", "content": '{"error": "missing required argument \'labels\'"}'}]
    retry = _first_call(model, scenario.tools, messages)["tool_calls"][0]["function"]
    assert retry["name"] == "create_issue" and orjson.loads(retry["arguments"])["labels"] == ["bug"]


def test_environment_takes_same_tool_steps_in_any_order():
    task = Task(id="t", user="look up ABC123 and XYZ789", steps=[
        Step(tool="get_reservation", arguments={"id": "ABC123"}), Step(tool="get_reservation", arguments={"id": "XYZ789"}),
        Step(tool="cancel", arguments={"id": "XYZ789"})])
    env = Environment(task)
    assert not env.execute("cancel", '{"id": "XYZ789"}')[0]  # a prerequisite first
    assert env.still_needed() == "get reservation"
    assert env.execute("get_reservation", '{"id": "XYZ789"}')[0]
    assert env.execute("get_reservation", '{"id": "ABC123"}')[0]
    assert env.execute("cancel", '{"id": "XYZ789"}')[0] and env.complete


def test_a_duplicate_tool_given_the_same_values_serves_the_step():
    task = Task(id="t", user="GCD of 40 and 12?", steps=[
        Step(tool="math_gcd", arguments={"num1": 40, "num2": 12}, result={"gcd": 4}, equivalents=["number_theory_gcd"])])
    assert not Environment(task).execute("calculate_lcm", '{"a": 40, "b": 12}')[0]  # not a duplicate
    env = Environment(task)
    ok, content = env.execute("number_theory_gcd", '{"number1": 40, "number2": 13}')
    assert not ok and "check the arguments" in content and "12" not in content  # never tells the right value
    assert env.execute("number_theory_gcd", '{"number2": 12, "number1": 40}') == (True, '{"gcd":4}') and env.complete


def test_model_reads_a_repeated_request_quoted_options_and_the_first_clause_of_an_opening_rule():
    schema = {"type": "object", "required": ["number", "unit"],
              "properties": {"number": {"type": "integer", "description": "The number."},
                             "unit": {"type": "string", "description": "Free text."},
                             "return_type": {"type": "string", "description":
                                             "Can be 'list' for prime factors or 'dictionary' for counts. Default is 'list'."}}}
    request = "Factorise 60 as a dictionary, in kg."
    nudge = f"That isn't done yet. What I still need: calculate a factorisation. Again: {request}"
    messages = [{"role": "user", "content": request}, {"role": "assistant", "content": "Sure."},
                {"role": "user", "content": nudge}]
    turn = simulated_model.Turn.read(messages)
    assert turn.request == request and turn.user == nudge
    assert fill_arguments(schema, turn.said, latest=turn.request) == {"number": 60, "unit": request,
                                                                      "return_type": "dictionary"}
    airline = "- The agent must first obtain the user id, then ask for the trip type, origin, destination."
    assert simulated_model.Turn.read([{"role": "system", "content": airline}]).opening_rule.strip() == "obtain the user id"


def test_conversions_read_source_target_and_what_is_measured():
    units = {"type": "object", "required": ["quantity", "from_unit", "to_unit", "item"],
             "properties": {"quantity": {"type": "integer", "description": "The quantity to be converted."},
                            "from_unit": {"type": "string", "description": "The unit to convert from."},
                            "to_unit": {"type": "string", "description": "The unit to convert to."},
                            "item": {"type": "string", "description": "The item to be converted."}}}
    said = "How many ounces in 2 pounds of butter?"
    assert fill_arguments(units, said, latest=said) == {  # units in the singular, as unit parameters name them
        "quantity": 2, "from_unit": "pound", "to_unit": "ounce", "item": "butter"}
    quoted = {"type": "object", "required": ["value", "from_unit", "to_unit"],
              "properties": {"value": {"type": "integer", "description": "The value to be converted."},
                             **{k: {"type": "string", "description": f"The unit to convert {k[:-5]}. Supports "
                                    "'teaspoon', 'tablespoon', 'cup', etc."} for k in ("from_unit", "to_unit")}}}
    said = "How many teaspoons are in 2 tablespoons for measurement in my recipe?"
    assert fill_arguments(quoted, said, latest=said) == {"value": 2, "from_unit": "tablespoon", "to_unit": "teaspoon"}
    money = {"type": "object", "required": ["amount", "from_currency", "to_currency"],
             "properties": {"amount": {"type": "integer", "description": "The amount to be converted."},
                            "from_currency": {"type": "string", "description": "The currency to convert from."},
                            "to_currency": {"type": "string", "description": "The currency to convert to."}}}
    said = "Convert 150 Euros to Canadian dollars."
    assert fill_arguments(money, said, latest=said) == {
        "amount": 150, "from_currency": "Euros", "to_currency": "Canadian dollars"}
    said = "Find the conversion rate from Euro to Dollar, please."
    assert fill_arguments(money, said, latest=said) == {"amount": 1, "from_currency": "Euro", "to_currency": "Dollar"}


def test_numbers_go_where_they_can_belong():
    binomial = {"type": "object", "required": ["num_trials", "num_success", "prob_success"],
                "properties": {"num_trials": {"type": "integer", "description": "Number of independent experiments."},
                               "num_success": {"type": "integer", "description": "Number of times the event occurred."},
                               "prob_success": {"type": "number", "description": "Probability of the event."}}}
    # a probability lies in [0, 1], an integer is whole; "100 times" counts trials, so it goes first
    said = "Calculate the probability of observing 60 heads if I flip a coin 100 times with probability of heads 0.5."
    assert fill_arguments(binomial, said, latest=said) == {"num_trials": 100, "num_success": 60, "prob_success": 0.5}
    said = "Calculate the probability of getting exactly 5 heads in 8 tosses of a fair coin."
    assert fill_arguments(binomial, said, latest=said) == {"num_trials": 8, "num_success": 5, "prob_success": 1}
    # "to" before a value marks a replacement only where the schema has a new_* parameter
    test = {"type": "object", "required": ["group", "alpha"],
            "properties": {"group": {"type": "array", "items": {"type": "integer"}, "description": "Observations."},
                           "alpha": {"type": "number", "description": "Significance level for hypothesis testing."}}}
    said = "Perform a t-test on my experiment data of Control [10, 15, 12, 14, 11] with alpha equals to 0.05"
    assert fill_arguments(test, said, latest=said) == {"group": [10, 15, 12, 14, 11], "alpha": 0.05}
    # the words before a value are read in its own clause: "in total" is the 3's, not the 0's
    bags = {"type": "object", "required": ["total_baggages", "nonfree_baggages"],
            "properties": {"total_baggages": {"type": "integer", "description": "The total number of baggage items."},
                           "nonfree_baggages": {"type": "integer", "description": "The number of non-free baggage items."}}}
    said = "Please update the baggage to 3 checked bags in total, 0 of them non-free."
    assert fill_arguments(bags, said, latest=said) == {"total_baggages": 3, "nonfree_baggages": 0}


def test_durations_dates_and_flags_are_read_from_prose():
    prices = {"type": "object", "required": ["duration"],
              "properties": {"duration": {"type": "string", "description":
                                          "Time duration. E.g., '1 week', '2 weeks', '1 month', etc."}}}
    said = "Retrieve stock prices of Microsoft and Google for the last 2 weeks."
    assert fill_arguments(prices, said, latest=said) == {"duration": "2 weeks"}
    rate = {"type": "object", "required": ["from_currency"],
            "properties": {"from_currency": {"type": "string", "description": "The currency to convert from."},
                           "date": {"type": "string", "description": "The date. Default is the current date."}}}
    said = "Find the conversion rate from Euro to Dollar at January 1, 2022"
    assert fill_arguments(rate, said, latest=said) == {"from_currency": "Euro", "date": "January 1, 2022"}
    said = "Find the conversion rate from Euro to Dollar today"
    assert fill_arguments(rate, said, latest=said) == {"from_currency": "Euro"}  # optional: no date, no guess
    regression = {"type": "object", "required": ["target"],
                  "properties": {"target": {"type": "string", "description": "The target variable."},
                                 "standardize": {"type": "boolean", "description": "Apply standardization."}}}
    said = "Run a linear regression with target 'Purchase_Amount'. Also apply standardization."
    assert fill_arguments(regression, said, latest=said) == {"target": "Purchase_Amount", "standardize": True}
    said = "Run a linear regression with target 'Purchase_Amount'."
    assert fill_arguments(regression, said, latest=said) == {"target": "Purchase_Amount"}


def _first_call(model: SimulatedModel, tools: list[dict], messages: list[dict], **extra) -> dict:
    message, _ = model.answer({"messages": messages, "tools": tools, **extra})
    return message


def test_tool_choice_is_obeyed_and_answers_are_deterministic():
    scenario = load_scenario("code_review")
    model = SimulatedModel(ModelKnobs(), seed=7)
    ask = [{"role": "user", "content": scenario.tasks[0].user}]
    forced = {"type": "function", "function": {"name": "create_issue"}}
    assert _first_call(model, scenario.tools, ask, tool_choice=forced)["tool_calls"][0]["function"]["name"] == "create_issue"
    assert "tool_calls" not in _first_call(model, scenario.tools, ask, tool_choice="none")
    first = _first_call(model, scenario.tools, ask, seed=3)["tool_calls"][0]["function"]
    again = _first_call(SimulatedModel(ModelKnobs(), seed=7), scenario.tools, ask, seed=3)["tool_calls"][0]["function"]
    assert first == again


def test_after_the_opening_step_the_model_goes_on_with_the_request_whatever_tools_are_offered():
    """A model that authenticated, as the system prompt says to first, still does what was asked
    when the next request no longer offers the authentication tools (a planner dropped them)."""
    scenario = load_scenario("customer_support")
    by_name = {t["function"]["name"]: t for t in scenario.tools}
    model = SimulatedModel(scenario.simulator, seed=0)

    def after(first: str, result: dict, offered: list[str]) -> dict:
        messages = [{"role": "system", "content": scenario.system_prompt}, {"role": "user", "content": TASK.user},
                    {"role": "assistant", "content": None, "tool_calls": [
                        {"id": "call_1", "type": "function", "function": {"name": first, "arguments": "{}"}}]},
                    {"role": "tool", "tool_call_id": "call_1", "content": orjson.dumps(result).decode()}]
        return _first_call(model, [by_name[n] for n in offered], messages)

    for offered in (["cancel_pending_order"], ["cancel_pending_order", "find_user_id_by_name_zip"]):
        message = after("find_user_id_by_name_zip", {"user_id": "omar_anderson_3203"}, offered)
        assert message["tool_calls"][0]["function"]["name"] == "cancel_pending_order", offered
    # a success that was not the opening step is the request done: the model answers
    assert "tool_calls" not in after("get_order_details", {"order_id": "#W6067464"}, ["cancel_pending_order"])


@pytest.mark.parametrize("name", ["code_review", "customer_support"])
def test_more_offered_tools_mean_more_wrong_choices(name):
    """Tool-selection accuracy falls as the offered list grows (RAG-MCP, MetaTool), as documented."""
    scenario = load_scenario(name)
    model = SimulatedModel(scenario.simulator, seed=0)
    rng = random.Random(0)
    accuracy = {}
    for offered in (2, 6, len(scenario.tools)):
        right = 0
        for i, task in enumerate(scenario.tasks[:120]):
            gold = task.steps[0].tool
            others = [t for t in scenario.tools if t["function"]["name"] != gold]
            tools = [next(t for t in scenario.tools if t["function"]["name"] == gold), *rng.sample(others, offered - 1)]
            rng.shuffle(tools)
            message = _first_call(model, tools, [{"role": "user", "content": task.user}], seed=i)
            right += message["tool_calls"][0]["function"]["name"] == gold
        accuracy[offered] = right / 120
    assert accuracy[2] > accuracy[6] > accuracy[len(scenario.tools)], accuracy


def _episodes(scenario_name: str, seed: int, n: int = 30) -> list[tuple[str, bool, int, int]]:
    scenario = load_scenario(scenario_name)
    model = SimulatedModel(scenario.simulator, seed)
    rng = random.Random(seed)

    async def run() -> list[tuple[str, bool, int, int]]:
        out = []
        for _ in range(n):
            task, episode_seed = rng.choice(scenario.tasks), rng.getrandbits(31)

            async def complete(messages, episode_seed=episode_seed):
                return model.answer({"messages": messages, "tools": scenario.tools, "seed": episode_seed})[0], None, 0

            result = await run_episode(complete, scenario, task)
            out.append((result.task_id, result.success, result.tool_calls, result.tool_errors))
        return out

    return asyncio.run(run())


def test_seeds_reproduce():
    assert _episodes("customer_support", seed=1) == _episodes("customer_support", seed=1)
    assert _episodes("customer_support", seed=1) != _episodes("customer_support", seed=2)


def test_answers_do_not_depend_on_the_process_hash_seed():
    """A model server restarted is a new process with a new string-hash seed: the same seed and
    request must still give the same call, arguments in the same order (later draws are seeded
    by what the conversation says)."""
    import os
    import subprocess

    script = textwrap.dedent("""
        from agentgym.scenarios.scenario import load_scenario
        from agentgym.scenarios.simulated_model import SimulatedModel
        for name in ("data_analysis", "customer_support"):
            scenario = load_scenario(name)
            model = SimulatedModel(scenario.simulator, 0)
            for i, task in enumerate(scenario.tasks[:40]):
                message = model.answer({"messages": [{"role": "user", "content": task.user}],
                                        "tools": scenario.tools, "seed": i})[0]
                print([(c["function"]["name"], c["function"]["arguments"]) for c in message.get("tool_calls") or []])
    """)
    outputs = [subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True,
                              env={**os.environ, "PYTHONHASHSEED": str(h)}).stdout for h in (1, 2)]
    assert outputs[0].count("\n") == 80 and outputs[0] == outputs[1]


def test_users_add_scenarios_as_files_or_python(tmp_path, monkeypatch):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "tiny.yaml").write_text(textwrap.dedent("""
        name: tiny
        title: Tiny
        description: one tool
        system_prompt: be brief
        tools:
          - type: function
            function: {name: ping, description: Ping a host., parameters: {type: object, properties: {host: {type: string, description: "such as 'db-1'"}}, required: [host]}}
        tasks:
          - {id: a, user: "ping db-7 please", steps: [{tool: ping, arguments: {host: db-7}}]}
    """))
    monkeypatch.setenv("AGENTGYM_SCENARIOS", str(folder))
    assert load_scenario("tiny").tool_names == ["ping"]
    (tmp_path / "my_scenarios.py").write_text(textwrap.dedent("""
        from agentgym.scenarios.scenario import load_file
        from pathlib import Path

        class Tiny:
            def build(self):
                return load_file(Path(__file__).parent / "mine" / "tiny.yaml")
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_scenario("my_scenarios:Tiny").name == "tiny"
    sys.modules.pop("my_scenarios", None)
    (folder / "broken.yaml").write_text("name: broken\ntitle: b\ndescription: d\nsystem_prompt: s\ntools: []\n"
                                        "tasks: [{id: a, user: u, steps: [{tool: nope}]}]\n")
    with pytest.raises(ValueError, match="step tool 'nope' is not one of the scenario's tools"):
        load_scenario("broken")
