"""The `openai` Node SDK's own tool loop (`runTools`), streamed and not, through a real proxy:
examples/node/agent.mjs run as users run it, checked against what the proxy recorded.
`make test` installs its node_modules (npm ci) and, where Node is missing, Node itself."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import stopped_store
from helpers import recorded_episode, run_script

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "node"


@pytest.fixture(scope="module")
def node() -> str:
    node = shutil.which("node")
    if node is None or not (EXAMPLE / "node_modules" / "openai").is_dir():
        pytest.fail(f"needs Node 20+ and {EXAMPLE}/node_modules: `make test` installs them (npm ci)")
    return node


def test_the_node_sdks_tool_loop_streamed_and_not_is_recorded_with_outcomes_and_feedback(node, proxy):
    found = run_script([node, str(EXAMPLE / "agent.mjs")], f"{proxy.url}/v1")
    missing = run_script([node, str(EXAMPLE / "agent.mjs"), "--stream", "What's the status of order A-2002?"],
                         f"{proxy.url}/v1")
    con = stopped_store(proxy)
    ok, failed = (recorded_episode(con, out.split()[1].rstrip(":")) for out in (found, missing))
    assert ok.calls == [("get_order_status", {"order_id": "A-1001"}, "success")] and ok.feedback == [True]
    assert failed.calls == [("get_order_status", {"order_id": "A-2002"}, "error")] and failed.feedback == [False]
    assert ok.links == failed.links == ["header", "header"]
    assert ok.streamed == [False, False] and failed.streamed == [True, True]
    assert not any(ok.usage_estimated + failed.usage_estimated)  # include_usage: the streamed usage came back
    assert "shipped" in found and "no order A-2002" in missing  # the model answered from the tool's result
