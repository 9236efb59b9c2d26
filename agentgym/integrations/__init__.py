"""Episode ids and feedback from inside any agent framework, with no change to the agent.

The proxy links the calls of one task by their messages, but a framework run that forks (parallel
sub-agents, retries) or a team that wants to report an outcome needs the id itself. Here a run is
`with episode() as ep:` (or `async with`); every request made inside it through an AgentGym-aware HTTP client
(`http_client()`, `async_http_client()`, or a framework helper built on them) carries the
`X-AgentGym-Episode-Id` header, and on leaving the block the outcome set on `ep` is sent to
`POST /v1/feedback`. The id lives in a context variable, so concurrent runs in one process (threads
with copied contexts, asyncio tasks) keep their own. Feedback fails open: a proxy that cannot be
reached logs a warning and the agent's run is unaffected.
"""

from __future__ import annotations

import logging
import os
import uuid
from contextvars import ContextVar, Token
from typing import Any

import httpx

EPISODE_HEADER = "X-AgentGym-Episode-Id"
DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"

log = logging.getLogger(__name__)
_current: ContextVar[Episode | None] = ContextVar("agentgym_episode", default=None)


def proxy_base_url(base_url: str | None = None) -> str:
    """The proxy's OpenAI base URL: the one given, else `AGENTGYM_BASE_URL`, else the agent's own
    `OPENAI_BASE_URL` (which points at the proxy), else the proxy's default address."""
    url = base_url or os.environ.get("AGENTGYM_BASE_URL") or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
    return url.rstrip("/")


def _feedback_url(base_url: str) -> str:
    root = base_url[: -len("/v1")] if base_url.endswith("/v1") else base_url
    return f"{root}/v1/feedback"


class Episode:
    """One agent run. Set `success` and/or `reward` before the block ends (or call `feedback`)."""

    def __init__(self, episode_id: str, base_url: str, timeout: float = 5.0) -> None:
        self.id = episode_id
        self.base_url = base_url
        self.timeout = timeout
        self.success: bool | None = None
        self.reward: float | None = None
        self.metadata: dict[str, Any] | None = None
        self.sent = False

    @property
    def headers(self) -> dict[str, str]:
        """For clients built per run (`default_headers=ep.headers`)."""
        return {EPISODE_HEADER: self.id}

    def _payload(self, success: bool | None, reward: float | None, metadata: dict[str, Any] | None) -> dict:
        body: dict[str, Any] = {"episode_id": self.id}
        if success is not None:
            body["success"] = success
        if reward is not None:
            body["reward"] = reward
        if metadata:
            body["metadata"] = metadata
        return body

    def feedback(self, *, success: bool | None = None, reward: float | None = None,
                 metadata: dict[str, Any] | None = None) -> bool:
        """Send the outcome now; True when the proxy recorded it. Fails open (logs, returns False)."""
        try:
            response = httpx.post(_feedback_url(self.base_url), json=self._payload(success, reward, metadata),
                                  timeout=self.timeout)
        except httpx.HTTPError as exc:
            return self._recorded(exc)
        return self._recorded(response)

    async def afeedback(self, *, success: bool | None = None, reward: float | None = None,
                        metadata: dict[str, Any] | None = None) -> bool:
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                response = await client.post(_feedback_url(self.base_url), json=self._payload(success, reward, metadata))
        except httpx.HTTPError as exc:
            return self._recorded(exc)
        return self._recorded(response)

    def _recorded(self, answer: httpx.Response | httpx.HTTPError) -> bool:
        """Whether the proxy recorded the feedback; why not, in the log."""
        if isinstance(answer, httpx.Response) and answer.is_success:
            self.sent = True
            return True
        why = answer if isinstance(answer, httpx.HTTPError) else f"HTTP {answer.status_code}: {answer.text[:200]}"
        log.warning("AgentGym feedback for episode %s was not recorded: %s", self.id, why)
        return False

    def _outcome(self, failed: bool) -> tuple[bool | None, float | None]:
        """What leaving the block reports: what was set, else a failure if the run raised."""
        if self.success is None and self.reward is None and failed:
            return False, None
        return self.success, self.reward


class _Run:
    """`with episode() as ep:` or, in asyncio code, `async with episode() as ep:` (feedback sent
    without blocking the event loop)."""

    def __init__(self, ep: Episode, feedback: bool) -> None:
        self.ep = ep
        self.send = feedback
        self.token: Token[Episode | None] | None = None

    def __enter__(self) -> Episode:
        self.token = _current.set(self.ep)
        return self.ep

    def _leave(self, failed: bool) -> tuple[bool | None, float | None] | None:
        """Restore the outer run; the outcome to send, if any."""
        if self.token is not None:
            _current.reset(self.token)
        success, reward = self.ep._outcome(failed)
        if self.send and not self.ep.sent and (success is not None or reward is not None):
            return success, reward
        return None

    def __exit__(self, kind: type[BaseException] | None, *_: Any) -> None:
        if outcome := self._leave(kind is not None):
            self.ep.feedback(success=outcome[0], reward=outcome[1], metadata=self.ep.metadata)

    async def __aenter__(self) -> Episode:
        return self.__enter__()

    async def __aexit__(self, kind: type[BaseException] | None, *_: Any) -> None:
        if outcome := self._leave(kind is not None):
            await self.ep.afeedback(success=outcome[0], reward=outcome[1], metadata=self.ep.metadata)


def episode(episode_id: str | None = None, *, base_url: str | None = None, feedback: bool = True) -> _Run:
    """A run: requests inside carry its id; leaving sends the outcome set on it (a run that raised
    with no outcome set is reported as failed). `feedback=False` sends nothing."""
    return _Run(Episode(episode_id or f"ep-{uuid.uuid4().hex}", proxy_base_url(base_url)), feedback)


def current_episode() -> Episode | None:
    return _current.get()


def episode_headers() -> dict[str, str]:
    """The header for the run in progress, or none outside a run."""
    ep = _current.get()
    return ep.headers if ep else {}


def _stamp(request: httpx.Request) -> None:
    ep = _current.get()
    if ep is not None and EPISODE_HEADER not in request.headers:
        request.headers[EPISODE_HEADER] = ep.id


async def _astamp(request: httpx.Request) -> None:
    _stamp(request)


def _client_kwargs(stamp: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The openai SDK's own client defaults (long reads, redirects), with the stamp hook first."""
    hooks = kwargs.pop("event_hooks", None) or {}
    kwargs.setdefault("timeout", httpx.Timeout(600.0, connect=5.0))
    kwargs.setdefault("follow_redirects", True)
    return {**kwargs, "event_hooks": {**hooks, "request": [stamp, *hooks.get("request", [])]}}


def http_client(**kwargs: Any) -> httpx.Client:
    """An httpx client that stamps the current run's id on every request; give it to any SDK that
    takes one (`openai.OpenAI(http_client=...)`, `ChatOpenAI(http_client=...)`)."""
    return httpx.Client(**_client_kwargs(_stamp, kwargs))


def async_http_client(**kwargs: Any) -> httpx.AsyncClient:
    """The asyncio twin of `http_client()`."""
    return httpx.AsyncClient(**_client_kwargs(_astamp, kwargs))


__all__ = ["EPISODE_HEADER", "Episode", "async_http_client", "current_episode", "episode",
           "episode_headers", "http_client", "proxy_base_url"]
