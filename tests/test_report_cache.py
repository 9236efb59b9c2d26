"""The proxy's report cache: a report is reused only while the store is unchanged, and not for long."""

from __future__ import annotations

import threading
import time

from agentgym.dashboards.report_cache import ReportCache


def test_a_report_is_reused_only_while_nothing_was_written():
    built: list[str] = []

    def build(name: str):
        return lambda: built.append(name) or {"name": name, "n": len(built)}

    cache = ReportCache(max_age_s=60, size=2)
    first = cache.get("all", 7, build("all"))
    assert cache.get("all", 7, build("all")) is first and built == ["all"]
    assert cache.get("all", 8, build("all")) == {"name": "all", "n": 2}  # a write since: built again
    cache.get("retail", 8, build("retail"))
    cache.get("airline", 8, build("airline"))  # the oldest one asked for goes
    cache.get("all", 8, build("all"))
    assert built == ["all", "all", "retail", "airline", "all"]

    aging = ReportCache(max_age_s=0.05)
    aging.get("all", 1, build("all"))
    time.sleep(0.06)
    aging.get("all", 1, build("all"))  # too old: the clock alone finishes idle episodes
    assert built[-2:] == ["all", "all"]

    def slow():  # a build that outlasts max_age_s: aged from its end, so still kept
        time.sleep(0.1)
        return build("slow")()

    slow_first = aging.get("slow", 1, slow)
    assert aging.get("slow", 1, slow) is slow_first and built[-1] == "slow" and built.count("slow") == 1


def test_concurrent_asks_build_one_report():
    cache, calls = ReportCache(), []

    def slow():
        calls.append(1)
        time.sleep(0.2)
        return {"n": len(calls)}

    answers: list[dict] = []
    threads = [threading.Thread(target=lambda: answers.append(cache.get("all", 3, slow))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert answers == [{"n": 1}] * 4 and calls == [1]
