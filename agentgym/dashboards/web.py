"""The web dashboard: one page (web/) that draws the report JSON with plotly.js.

Served by the proxy at `/dashboard`, it reads `/admin/report` with the filters it shows; for
`agentgym report --format html` the same page carries the report and its scripts inline, so
the file opens anywhere, offline. plotly.js comes from the `plotly` package (its bundled
`plotly.min.js`), so the browser loads nothing from the internet. The proxy imports this
module only on the dashboard's routes.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from functools import cache
from importlib.resources import files
from typing import Any

PAGE = files(__package__) / "web"
ASSET_TYPES = {"dashboard.js": "text/javascript", "dashboard.css": "text/css", "plotly.min.js": "text/javascript"}


@cache
def asset(name: str) -> tuple[bytes, bytes]:
    """An asset's bytes, plain and gzipped (plotly.min.js is 4.8 MB, 1.4 MB gzipped); KeyError if unknown."""
    if name not in ASSET_TYPES:
        raise KeyError(name)
    if name == "plotly.min.js":
        from plotly.offline import get_plotlyjs

        data = get_plotlyjs().encode()
    else:
        data = (PAGE / name).read_bytes()
    return data, gzip.compress(data, 6)


def _fill(styles: str, scripts: str) -> str:
    return (PAGE / "dashboard.html").read_text().replace("<!--styles-->", styles).replace("<!--scripts-->", scripts)


@cache
def page() -> str:
    """The served page: assets by relative URL (so a path prefix in front of the proxy works),
    each named with a digest of its content so that browsers may cache it for good."""

    def url(name: str) -> str:
        return f"dashboard/assets/{name}?v={hashlib.sha256(asset(name)[0]).hexdigest()[:12]}"

    return _fill(
        f'<link rel="stylesheet" href="{url("dashboard.css")}">',
        f'<script src="{url("plotly.min.js")}"></script>\n<script src="{url("dashboard.js")}"></script>',
    )


def standalone(report: dict[str, Any]) -> str:
    """One self-contained HTML file: the page, its scripts and `report`, all inline."""
    # "<" escaped: no string in the report (an error message, a reason) can close the script element
    data = json.dumps(report, default=str).replace("<", "\\u003c")
    return _fill(
        f"<style>\n{asset('dashboard.css')[0].decode()}</style>",
        f"<script>{asset('plotly.min.js')[0].decode()}</script>\n"
        f"<script>window.AGENTGYM_REPORT = {data};</script>\n"
        f"<script>{asset('dashboard.js')[0].decode()}</script>",
    )
