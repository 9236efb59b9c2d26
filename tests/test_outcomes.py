"""Reading tool results as success / error / unknown, with default and configured rules."""

import pytest

from agentgym.config import OutcomeRules
from agentgym.proxy.outcomes import OutcomeClassifier

DEFAULT = OutcomeClassifier(OutcomeRules())


@pytest.mark.parametrize(
    ("content", "outcome", "message"),
    [
        ('{"error": "order not found"}', "error", "order not found"),
        ('{"error": {"message": "rate limited", "code": 429}}', "error", "rate limited"),
        ('{"status": "failed", "message": "card declined"}', "error", "card declined"),
        ('{"Status": "OK", "order": "W1"}', "success", None),
        ('{"error": null, "order": "W1"}', "success", None),
        ('{"result": [1, 2]}', "success", None),
        ("[1, 2, 3]", "success", None),
        ("Error: user not found", "error", "Error: user not found"),
        ("Traceback (most recent call last):\n  ...\nKeyError: 'id'", "error", None),
        ("ValueError: bad date", "error", "ValueError: bad date"),
        ("The weather in Paris is sunny.", "success", None),
        ("", "unknown", None),
        (None, "unknown", None),
        ([{"type": "text", "text": '{"error": "boom"}'}], "error", "boom"),
        # a dict as Python's repr, as the Agents SDK, AutoGen and CrewAI send a tool's return value
        ("{'error': 'no order A-1009'}", "error", "no order A-1009"),
        ("{'status': 'failed', 'message': 'card declined', 'retry': False}", "error", "card declined"),
        ("{'order_id': 'A-1001', 'status': 'shipped', 'items': [1, None]}", "success", None),
        ("{'when': datetime.date(2026, 1, 1)}", "success", None),  # not a literal: read as text
        ("{'when': datetime.date(2026, 1, 1), 'error': 'late'}", "success", None),  # likewise
    ],
)
def test_default_rules(content, outcome, message):
    result = DEFAULT.classify(content)
    assert result.outcome == outcome
    if message is not None:
        assert result.error_message == message


def test_rules_are_configurable():
    rules = OutcomeRules(error_keys=["problem"], status_keys=["code"], error_statuses=["nok"], text_is="unknown",
                         error_patterns=[r"^oops"])
    classifier = OutcomeClassifier(rules)
    assert classifier.classify('{"problem": "x"}').outcome == "error"
    assert classifier.classify('{"error": "x"}').outcome == "success"  # not an error key any more
    assert classifier.classify('{"code": "NOK"}').outcome == "error"
    assert classifier.classify("oops, that failed").outcome == "error"
    assert classifier.classify("fine").outcome == "unknown"


def test_error_messages_are_bounded():
    result = DEFAULT.classify('{"error": "' + "x" * 5000 + '"}')
    assert result.outcome == "error" and len(result.error_message) == 300
