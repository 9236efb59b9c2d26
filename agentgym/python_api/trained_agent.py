"""`TrainedAgent`: a planner version a Trainer registered, as a framework's client through a proxy serving it.

Given `proxy_url=`, the clients go to that proxy (which serves whatever its registry has live).
Otherwise a proxy starts in this process (`agentgym serve`'s app under uvicorn on a thread,
127.0.0.1, a free port) with the version pinned live in a registry of its own
(`Registry.pin`: training on elsewhere never changes what it serves), its own store under
`<workdir>/served/` (`agentgym report --db` reads it), no trainer and no rollout, and a key of
its own that only this object's clients present (so the upstream gets the key from the
configuration's `upstream.api_key_env`, OPENAI_API_KEY by default). It stops on `close()`, at
the end of a `with` block, or when the interpreter exits.
"""

from __future__ import annotations

import atexit
import os
import secrets
import uuid
from pathlib import Path
from typing import Any

import orjson

from agentgym.config import load_settings
from agentgym.python_api.frameworks import framework_module
from agentgym.python_api.workdir import Workdir, registry_of
from agentgym.scenarios.agents import MODEL
from agentgym.scenarios.local_stack import ThreadServer, free_port
from agentgym.trainer.registry import Registry, Version, default_dir


class TrainedAgent:
    def __init__(self, registry: Registry, version: Version, *, model: str, proxy_url: str | None = None,
                 upstream: str | None = None, config: str | Path | None = None,
                 served: Path | None = None) -> None:
        self.registry, self.version, self.model = registry, version.version, model
        self.meta = version
        self.store: Path | None = None
        self._server: ThreadServer | None = None
        if proxy_url is not None:
            self.base_url = proxy_url.rstrip("/")
            self.api_key = os.environ.get("OPENAI_API_KEY", "agentgym")
            return
        self.store = (served or registry.folder.parent / "served") / f"{self.version}-{uuid.uuid4().hex[:8]}.duckdb"
        self.store.parent.mkdir(parents=True, exist_ok=True)
        pinned = registry.pin(self.version, default_dir(self.store), by="TrainedAgent")
        self.api_key = f"agentgym-{secrets.token_urlsafe(16)}"
        settings = load_settings(config, store={"path": self.store}, planner={"policies_dir": pinned.folder},
                                 trainer={"enabled": False}, rollout={"automatic": False},
                                 server={"proxy_keys": [self.api_key]},
                                 **({"upstream": {"url": upstream}} if upstream else {}))
        from agentgym.proxy.app import create_app

        port = free_port()
        app = create_app(settings, public_url=f"http://127.0.0.1:{port}")
        planner = app.state.proxy.planner
        planner.refresh()  # now, not on the watcher's first turn: the first request is served by the version
        if planner.loaded()["live"] != self.version:
            raise RuntimeError(f"the proxy refused {self.version} (see the log above)")
        self._server = ThreadServer(app, port, access_log=False, timeout_keep_alive=settings.server.keep_alive_s,
                                    timeout_graceful_shutdown=30).start()
        self.base_url = f"{self._server.url}/v1"
        atexit.register(self.close)

    @classmethod
    def load(cls, scenario_or_path: str | Path, version: str = "latest", *, proxy_url: str | None = None,
             upstream: str | None = None, model: str | None = None,
             config: str | Path | None = None) -> TrainedAgent:
        """What a Trainer run registered: `scenario_or_path` is a scenario name (its default workdir,
        `~/.cache/agentgym/<scenario>`), a workdir, or a registry folder; `version` "latest" is the
        version live there, or a name such as "v3". `model`: what the clients ask for (default: the
        model the run trained with); `upstream`: where the in-process proxy forwards (default: the
        configuration's `upstream.url`); `config`: an agentgym.yaml for it."""
        folder, workdir = registry_of(scenario_or_path)
        registry = Registry(folder)
        index = registry.index()
        name = index.live if version == "latest" else version
        if name is None or name not in index.versions:
            known = ", ".join(f"{v.version} ({v.status})" for v in index.versions.values()) or "none"
            wanted = "no version is live" if name is None else f"no version {version!r}"
            raise LookupError(f"{folder}: {wanted}; its versions: {known}")
        return cls(registry, index.versions[name], model=model or _trained_model(workdir), proxy_url=proxy_url,
                   upstream=upstream, config=config, served=workdir.served if workdir else None)

    def to(self, framework: str, **kwargs: Any) -> Any:
        """`framework`'s client or model object on the proxy (its integration's `chat_model`);
        `kwargs` go to it (`model=` and `api_key=` default to this agent's)."""
        kwargs.setdefault("model", self.model)
        kwargs.setdefault("api_key", self.api_key)
        return framework_module(framework).chat_model(self.base_url, **kwargs)

    def to_openai(self, **kwargs: Any) -> Any:
        """An `openai.OpenAI` client (for `AsyncOpenAI`: `agentgym.integrations.openai_sdk.async_chat_model(
        agent.base_url, model=agent.model, api_key=agent.api_key)`)."""
        return self.to("openai", **kwargs)

    def to_langchain(self, **kwargs: Any) -> Any:
        return self.to("langchain", **kwargs)

    def to_autogen(self, **kwargs: Any) -> Any:
        return self.to("autogen", **kwargs)

    def to_crewai(self, **kwargs: Any) -> Any:
        return self.to("crewai", **kwargs)

    def close(self) -> None:
        """Stop the in-process proxy (its recorder flushes to the store first)."""
        if self._server is not None:
            self._server.stop()
            self._server = None
            atexit.unregister(self.close)

    def __enter__(self) -> TrainedAgent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TrainedAgent({self.version} of {self.registry.folder}, proxy {self.base_url})"


def _trained_model(workdir: Workdir | None) -> str:
    """The model the workdir's last Trainer run asked for (the simulator's, unless told otherwise)."""
    try:
        return orjson.loads(workdir.results.read_bytes())["model"] if workdir else MODEL
    except (FileNotFoundError, KeyError, orjson.JSONDecodeError):
        return MODEL
