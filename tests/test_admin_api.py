"""The admin API for policies and rollouts, on a real proxy process over real HTTP: changes under
live traffic with no failed request, each serving by the time it is answered and recorded with
who made it and why; without the admin key, or with bad input, nothing changes."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import duckdb
import httpx
from helpers import register_policy, wait_for_planner

from agentgym.scenarios.scenario import load_scenario
from agentgym.store import live_server
from agentgym.trainer.registry import Registry, default_dir

ADMIN = {"authorization": "Bearer admin-secret"}
# the watcher would pick changes up within a minute: only the API's own refresh can make them serve at once
ENV = {"AGENTGYM_SERVER__ADMIN_KEY": "admin-secret", "AGENTGYM_PLANNER__REFRESH_S": "60"}


@contextmanager
def _traffic(url: str, statuses: list[int], *, workers: int = 4, most: int = 2000,
             within_s: float = 120) -> Iterator[None]:
    """Chat requests offering tools, each its own episode, from `workers` threads until the block
    ends (at most `most` of them, for at most `within_s`); a request that raises fails the test."""
    scenario = load_scenario("customer_support")
    body = {"model": "agentgym-sim", "tools": scenario.tools,
            "messages": [{"role": "user", "content": scenario.tasks[0].user}]}
    done, deadline, numbers = threading.Event(), time.monotonic() + within_s, itertools.count()

    def work() -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            while not done.is_set() and time.monotonic() < deadline and (i := next(numbers)) < most:
                response = client.post("/v1/chat/completions", json={**body, "seed": i},
                                       headers={"x-agentgym-episode-id": f"load-{i}"})
                statuses.append(response.status_code)

    with ThreadPoolExecutor(workers) as pool:
        running = [pool.submit(work) for _ in range(workers)]
        try:
            yield
        finally:
            done.set()
            for worker in running:
                worker.result()


def _more_requests(statuses: list[int], n: int = 20) -> None:
    """Until `n` more requests have been answered: some are served by the state just made."""
    target = len(statuses) + n
    for _ in range(600):
        if len(statuses) >= target:
            return
        time.sleep(0.05)
    raise AssertionError(f"traffic stalled at {len(statuses)} requests")


def _admin_get(url: str, path: str) -> dict:
    response = httpx.get(f"{url}{path}", headers=ADMIN, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def test_promote_canary_shadow_and_rollback_through_the_api_under_load(start_proxy, tmp_path):
    db = tmp_path / "admin.duckdb"
    registry = Registry(default_dir(db))
    v1, v2, v3 = (register_policy(registry, b_defer=b) for b in (0.0, 5.0, 2.0))
    registry.promote(v1, by="test", reason="start")
    proxy = start_proxy(db=db, env=ENV)
    wait_for_planner(proxy.url, live=v1)
    steps = [  # (path, body, what the planner serves after it)
        (f"/admin/policies/{v2}/promote", {"canary": 20, "reason": "try v2", "by": "alice"},
         {"live": v1, "canary": v2, "shadow": None}),
        (f"/admin/policies/{v2}/promote", {"canary": 50}, {"live": v1, "canary": v2, "shadow": None}),
        (f"/admin/policies/{v2}/promote", None, {"live": v2, "canary": None, "shadow": None}),
        (f"/admin/policies/{v3}/shadow", {"reason": "look", "by": "bob"}, {"live": v2, "canary": None, "shadow": v3}),
        ("/admin/rollback", {"reason": "enough", "by": "bob"}, {"live": v2, "canary": None, "shadow": None}),
    ]
    statuses: list[int] = []
    with httpx.Client(base_url=proxy.url, headers=ADMIN, timeout=60) as admin, _traffic(proxy.url, statuses):
        _more_requests(statuses)
        for path, body, serving in steps:
            response = admin.post(path, json=body)
            assert response.status_code == 200, response.text
            state = response.json()
            assert state["serving"] == serving and state["live"] == serving["live"], state
            assert (state["shadow"] or {}).get("version") == serving["shadow"]
            assert (state["canary"] or {}).get("version") == serving["canary"]
            assert admin.get("/readyz").json()["planner"] == serving  # serving by the time it was answered
            assert admin.get("/admin/rollout").json() == state
            _more_requests(statuses)
    assert statuses and set(statuses) == {200}, statuses
    assert state["live_percent"] == 100 and state["canary"] is None

    history = {v: [(h["from"], h["to"], h["by"], h["reason"]) for h in _admin_get(proxy.url, f"/admin/policies/{v}")
                   ["history"]] for v in (v1, v2, v3)}
    api = "through the admin API"
    assert history[v1] == [("candidate", "live", "test", "start"),
                           ("live", "retired", "admin:api", f"replaced by {v2}")]
    assert history[v2] == [("candidate", "canary", "admin:alice", "try v2 (20% of episodes)"),
                           ("canary", "canary", "admin:api", f"manual promotion {api} (50% of episodes)"),
                           ("canary", "live", "admin:api", f"manual promotion {api}")]
    assert history[v3] == [("candidate", "shadow", "admin:bob", "look"), ("shadow", "rolled_back", "admin:bob", "enough")]
    listed = subprocess.run([sys.executable, "-m", "agentgym", "policies", "list", "--db", str(db), "--format", "json"],
                            capture_output=True, text=True, timeout=120)
    assert json.loads(listed.stdout) == _admin_get(proxy.url, "/admin/policies")  # the same data as the CLI's

    assert proxy.stop(), proxy.log()
    served = duckdb.connect(str(db), read_only=True).execute("SELECT DISTINCT arm, policy_version FROM decisions")
    assert {("live", v1), ("canary", v2), ("live", v2), ("shadow", v3)} <= set(served.fetchall())


def test_without_the_admin_key_or_with_bad_input_nothing_changes(start_proxy, tmp_path):
    db = tmp_path / "refusals.duckdb"
    registry = Registry(default_dir(db))
    v1, v2, v3, rotten = (register_policy(registry) for _ in range(4))
    (registry.folder / f"{rotten}.npz").write_bytes(b"not a policy")
    proxy = start_proxy(db=db, env=ENV)
    admin = httpx.Client(base_url=proxy.url, headers=ADMIN, timeout=60)
    refused = admin.post("/admin/rollback")
    assert refused.status_code == 409 and refused.json()["error"]["message"] == "no live policy to roll back"
    assert admin.post(f"/admin/policies/{v1}/promote").status_code == 200
    assert admin.post(f"/admin/policies/{v2}/promote", json={"canary": 20}).status_code == 200
    before, serving = registry.index_path.read_bytes(), {"live": v1, "canary": v2, "shadow": None}
    assert admin.get("/readyz").json()["planner"] == serving

    routes = [("GET", "/admin/policies"), ("GET", f"/admin/policies/{v1}"), ("GET", "/admin/rollout"),
              ("POST", f"/admin/policies/{v3}/promote"), ("POST", f"/admin/policies/{v3}/shadow"),
              ("POST", "/admin/rollback")]
    for method, path in routes:
        for headers in ({}, {"authorization": "Bearer guess"}, {"x-agentgym-admin-key": "guess"}):
            response = httpx.request(method, f"{proxy.url}{path}", headers=headers)
            assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_admin_key", path
    token = live_server.find(db).token  # the local token `agentgym` commands beside the server use
    assert httpx.get(f"{proxy.url}/admin/rollout", headers={"authorization": f"Bearer {token}"}).status_code == 200
    assert httpx.get(f"{proxy.url}/admin/rollout", headers={"x-agentgym-admin-key": "admin-secret"}).status_code == 200

    bad = [  # (method, path, body, status, code, part of the message)
        ("GET", "/admin/policies/v9", None, 404, "unknown_version", "no policy version 'v9'"),
        ("POST", "/admin/policies/v9/promote", b"{}", 404, "unknown_version", "no policy version 'v9'"),
        ("POST", "/admin/policies/v9/shadow", b"", 404, "unknown_version", "no policy version 'v9'"),
        ("POST", f"/admin/policies/{v2}/promote", b'{"canary": 150}', 409, "refused", "less than 100%"),
        ("POST", f"/admin/policies/{v2}/promote", b'{"canary": 0}', 409, "refused", "more than 0%"),
        ("POST", f"/admin/policies/{v3}/promote", b'{"canary": 10}', 409, "refused", f"{v2} is in canary"),
        ("POST", f"/admin/policies/{v1}/promote", b'{"canary": 10}', 409, "refused", f"{v1} is live already"),
        ("POST", f"/admin/policies/{v1}/shadow", b"{}", 409, "refused", f"{v1} serves already"),
        ("POST", f"/admin/policies/{rotten}/promote", b"{}", 409, "corrupt_policy", "checksum mismatch"),
        ("POST", f"/admin/policies/{rotten}/shadow", b"{}", 409, "corrupt_policy", "checksum mismatch"),
        ("POST", f"/admin/policies/{v3}/promote", b"{not json", 400, "invalid_json", "not valid JSON"),
        ("POST", "/admin/rollback", b"[1, 2]", 400, "invalid_body", "valid dictionary"),
        ("POST", f"/admin/policies/{v3}/promote", b'{"canary": "20"}', 400, "invalid_body", "canary"),
        ("POST", f"/admin/policies/{v3}/promote", b'{"percent": 20}', 400, "invalid_body", "percent"),
        ("POST", "/admin/rollback", b'{"reason": 5}', 400, "invalid_body", "reason"),
    ]
    for method, path, body, status, code, message in bad:
        response = admin.request(method, path, content=body)
        error = response.json()["error"]
        assert (response.status_code, error["code"]) == (status, code) and message in error["message"], (path, body,
                                                                                                          error)
    assert registry.index_path.read_bytes() == before
    assert admin.get("/readyz").json()["planner"] == serving
    admin.close()
    assert proxy.stop(), proxy.log()
