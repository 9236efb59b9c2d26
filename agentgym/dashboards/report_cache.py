"""Reports the proxy has built, reused while the store has not changed.

A dashboard polls `/admin/report` every few seconds, several may be open at once, and at 10^6
recorded inferences one report costs the proxy about two CPU-seconds. A report's figures depend
on the store's rows, its scope and window, and on the clock (an episode without feedback finishes
once it has been idle long enough), so a built report is reused for the same scope and window
while the recorder has committed nothing since (its `writes`), and for at most `max_age_s`
after it was built.
The caller reads the registry's part (versions, rollout) afresh every time.

One report is built at a time: concurrent asks for the same one wait for it instead of building
it again, and the requests the proxy serves keep the other cores.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any


class ReportCache:
    def __init__(self, max_age_s: float = 5.0, size: int = 16) -> None:
        self.max_age_s = max_age_s
        self.size = size
        self._lock = threading.Lock()
        self._reports: OrderedDict[Hashable, tuple[int, float, dict[str, Any]]] = OrderedDict()

    def get(self, key: Hashable, writes: int, build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """The report for `key` built after the store's `writes`-th write: a kept one, or `build()`."""
        with self._lock:
            kept = self._reports.get(key)
            if kept is not None and kept[0] == writes and time.monotonic() - kept[1] < self.max_age_s:
                self._reports.move_to_end(key)
                return kept[2]
            report = build()
            # aged from when it was built: a report that took longer than max_age_s is still worth keeping
            self._reports[key] = (writes, time.monotonic(), report)
            self._reports.move_to_end(key)
            while len(self._reports) > self.size:
                self._reports.popitem(last=False)
            return report
