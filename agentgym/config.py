"""Configuration: one `agentgym.yaml`, validated by pydantic, every field overridable by
`AGENTGYM_*` environment variables (nested with `__`, e.g. `AGENTGYM_UPSTREAM__URL`).

Precedence, highest first: command-line flags, environment, the YAML file, defaults.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, YamlConfigSettingsSource

CONFIG_ENV = "AGENTGYM_CONFIG"
DEFAULT_CONFIG_FILE = "agentgym.yaml"


class Section(BaseModel):
    """A config section; unknown keys are errors, so a typo never silently does nothing."""

    model_config = ConfigDict(extra="forbid")


class ServerConfig(Section):
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = Field(10_000_000, description="larger request bodies get 413")
    keep_alive_s: float = Field(75.0, gt=0, description="idle client connections are kept this long: longer than "
                                "clients' own pool expiry (httpx and the openai SDK: 5 s), so a client never "
                                "sends on a connection the proxy is closing")
    proxy_keys: list[str] = Field(
        default_factory=list,
        description="if set, clients must send one of these as `Authorization: Bearer KEY`",
    )
    admin_key: str | None = Field(None, description="required by /admin/*; unset means admin is local-token only")
    metrics_label_limit: int = Field(200, ge=1, description="distinct tool and model names /metrics labels "
                                     "(clients choose them); later ones are counted as \"other\"")


class UpstreamConfig(Section):
    url: str = "https://api.openai.com/v1"
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the upstream key")
    auth: Literal["auto", "env", "passthrough"] = Field(
        "auto",
        description="auto: the client's Authorization header if it sends one that is not a proxy key, "
        "else the key from api_key_env; env: always api_key_env; passthrough: always the client's header",
    )
    timeout_s: float = 600.0
    connect_timeout_s: float = 10.0
    max_connections: int = 1000
    models: list[str] = Field(
        default_factory=list, description="if set, /v1/models lists these instead of asking the upstream"
    )
    provider_routing: bool = Field(
        True,
        description="send `provider/model` names for providers litellm knows (anthropic/..., bedrock/...) through "
        "litellm; turn off for upstreams that use such names themselves (OpenRouter)",
    )


class ProviderConfig(Section):
    """A non-OpenAI provider reached through litellm, for models named `provider/model`."""

    api_base: str | None = None
    api_key_env: str | None = None


class ModelPrice(Section):
    input_cost_per_token: float
    output_cost_per_token: float


class StoreConfig(Section):
    path: Path = Path("agentgym.duckdb")
    flush_interval_s: float = Field(0.5, description="the most a `kill -9` can lose is about this much traffic")
    batch_max_rows: int = 20_000
    queue_max_rows: int = Field(200_000, description="beyond this, records are dropped (counted), never requests")
    record_bodies: bool = Field(True, description="store request and response JSON with each inference")


class RewardRule(Section):
    """A decision's reward: its episode's outcome broadcast to every decision of the episode,
    plus per-step terms for what its own inference led to."""

    success: float = 1.0
    failure: float = 0.0
    tool_success: float = 0.0
    tool_error: float = -0.05
    per_1k_prompt_tokens: float = -0.01


class PlannerConfig(Section):
    """The tool-selection planner in the proxy: it applies the live policy version, if any."""

    enabled: bool = Field(True, description="apply the live policy; off: requests pass unchanged, nothing is decided")
    policies_dir: Path | None = Field(None, description="the policy registry; default: the store's path + .policies")
    refresh_s: float = Field(1.0, description="how often the registry is checked for a newly promoted version")
    epsilon: float = Field(0.01, ge=0, le=1, description="share of uniform exploration over the three actions "
                         "(force the top tool, offer the likeliest, defer)")
    control_share: float = Field(0.0, ge=0, lt=1, description="share of episodes served with no policy at all "
                                 "(arm control), whatever is live or in canary: a baseline that never goes stale")
    coverage: float = Field(0.7, gt=0, le=1, description="\"offer\" keeps the likeliest tools up to this probability")
    max_offered: int = Field(5, ge=1, description="and at most this many")
    seed: int | None = Field(None, description="seed for the exploration draws (tests, benchmarks)")


class WandbConfig(Section):
    """Export of each training round's statistics to Weights & Biases (`pip install 'agentgym[wandb]'`);
    W&B's own variables (WANDB_API_KEY, WANDB_MODE, WANDB_DIR, WANDB_ENTITY) apply."""

    project: str | None = Field(None, description="the W&B project; unset: $WANDB_PROJECT, and with neither, "
                                "no export")
    entity: str | None = Field(None, description="the W&B team or user; unset: W&B's default")
    tags: list[str] = Field(default_factory=list, description="tags on the run")


class TrainerConfig(Section):
    """The scheduled trainer (in the proxy process when enabled, or `agentgym train` beside it)."""

    enabled: bool = Field(False, description="run training rounds on the schedule inside `agentgym serve`")
    every_episodes: int | None = Field(100, ge=1, description="a round once the live version has served this many "
                                       "finished episodes")
    every_s: float | None = Field(None, gt=0, description="and/or a round this often, if there are enough decisions")
    check_s: float = Field(2.0, gt=0, description="how often the schedule looks at the counts")
    min_decisions: int = Field(100, ge=1, description="fewer logged decisions than this: no round")
    older_data: Literal["drop", "importance"] = Field(
        "drop", description="decisions of earlier versions: dropped (strictly on-policy) or importance-corrected")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = 0
    steps: int = Field(60, ge=1, description="optimiser steps per round")
    learning_rate: float = Field(0.05, gt=0)
    clip: float = Field(0.5, gt=0, description="PPO/GRPO ratio clip: how far one round may move the probability "
                        "of a logged choice (a factor 1 - clip to 1 + clip)")
    kl: float = Field(0.02, ge=0, description="weight of the KL term to the version that served the batch")
    weight_decay: float = Field(2.0, ge=0, description="decoupled weight decay (AdamW) of the shared learned terms "
                                "(which kinds of request go with which kinds of tool) toward the text-similarity "
                                "prior: less memorising of the requests trained on")
    tool_weight_decay: float = Field(0.3, ge=0, description="the same for each tool's own terms (this deployment's "
                                     "facts about it): looser, so near-duplicate tools are told apart")
    outcome_weight: float = Field(1.0, ge=0, description="weight of the tool scores' lesson from each call's "
                                  "outcome (the model's own choices included)")
    outcome_decisions: int = Field(20_000, ge=0, description="the tool scores also learn from the calls after up to "
                                   "this many recent decisions of earlier versions: which tool works for which "
                                   "request is the deployment's fact, not the policy's, so it needs no correction")
    gate_margin: float = Field(0.0, ge=0, description="a new version may estimate at most this much below the current")
    promote: Literal["rollout", "auto", "manual"] = Field(
        "rollout", description="rollout: a version that passes the gate earns its way, in shadow (rollout.shadow), "
        "then as a canary through rollout.steps, promoted or rolled back by the rollout controller; auto: it goes "
        "live at once; manual: it waits as a candidate")
    zero_shot_defer: float = Field(
        13.0, description="the first version scores 'defer' this high, 'offer' 2 lower, 'force' 0: "
        "how often it leaves requests alone (the untrained model) while it learns")
    reward: RewardRule = RewardRule()
    wandb: WandbConfig = WandbConfig()


RolloutMetric = Literal["episode_success", "tool_success", "cost_per_success", "latency_p95"]


class RolloutConfig(Section):
    """Canaries moved along their steps, or rolled back, by a sequential comparison with the
    baseline's episodes over the same time (`agentgym.trainer.rollout`)."""

    automatic: bool = Field(True, description="analyse running canaries inside `agentgym serve` and act on them; "
                            "off: canaries move only by hand")
    steps: list[float] = Field([5.0, 25.0, 50.0], description="percentages of episodes a canary serves, step by "
                               "step; passing the last one promotes it")
    shadow: bool = Field(True, description="a version the trainer hands over scores every request in shadow first, "
                         "and is rolled back if its off-policy estimate there is confidently worse than live's, else starts its canary")
    baseline: Literal["live", "control"] = Field(
        "live", description="what a canary is compared with: live, the live version's episodes (with no live "
        "version, those served by no policy); control, the episodes served by no policy (planner.control_share)")
    metrics: dict[RolloutMetric, NonNegativeFloat] = Field(
        {"episode_success": 0.03, "tool_success": 0.03, "cost_per_success": 0.10, "latency_p95": 0.20},
        description="the metrics compared, each with its tolerance: how much lower a canary's episode or tool "
        "success rate may be (absolute: 0.03 is 3 points), how much higher its cost per successful episode or its "
        "p95 request latency (relative: 0.10 is 10%), and still pass; a metric left out is not checked, one "
        "with no value in either arm (no cost known for the model) is reported as not measured and left out")
    guardrails: list[RolloutMetric] = Field(
        ["latency_p95"], description="metrics of `metrics` that roll a canary back when credibly worse but need not "
        "be shown not worse for a step to pass (p95 latency takes thousands of episodes to show within 20%)")
    min_episodes: int = Field(100, ge=2, description="finished episodes each arm needs in a step before it can pass")
    max_episodes: int = Field(3000, ge=2, description="a step still inconclusive after this many canary episodes "
                              "ends as `on_inconclusive` says")
    on_inconclusive: Literal["wait", "pause", "rollback"] = Field(
        "wait", description="wait: keep analysing; pause: the canary keeps serving at its step, marked paused and "
        "no longer analysed, until started again by hand; rollback: roll it back")
    alpha: float = Field(0.05, gt=0, lt=1, description="the always-valid intervals' error rate")
    tau: float = Field(0.1, gt=0, description="the sequential test's mixing scale: the size of difference it is "
                       "quickest to detect")
    check_s: float = Field(5.0, gt=0, description="how often a running canary is analysed")

    @field_validator("steps")
    @classmethod
    def _steps(cls, steps: list[float]) -> list[float]:
        if not steps or any(not 0 < a < 100 for a in steps) or steps != sorted(set(steps)):
            raise ValueError("steps are increasing percentages, each above 0 and below 100")
        return steps

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, metrics: dict[RolloutMetric, float]) -> dict[RolloutMetric, float]:
        if not metrics:
            raise ValueError("name at least one metric to compare canaries on: episode_success, tool_success, "
                             "cost_per_success, latency_p95")
        return metrics

    @model_validator(mode="after")
    def _guardrails(self) -> RolloutConfig:
        if set(self.metrics) <= set(self.guardrails):
            raise ValueError("at least one metric of rollout.metrics must not be a guardrail: a step passes only on "
                             "what it has shown")
        return self


def http_url(value: str | None, what: str) -> str | None:
    """An http(s) URL with a host, without a trailing slash; a clear error otherwise."""
    if value is None:
        return None
    from urllib.parse import urlsplit

    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{what} must be an http:// or https:// URL with a host, not {value!r}")
    return value.rstrip("/")


class RewardModelConfig(Section):
    """The reward model that scores a planner's choice on a recorded context without replaying
    the call (`agentgym.trainer.lightning.reward_model`): a logistic regression on the encoder's
    vectors of the context and of the tool, fitted on the recorded outcomes."""

    target: Literal["call", "episode"] = Field(
        "call", description="what it predicts: call, whether the tool the model called first worked; episode, "
        "whether the episode it was part of succeeded")
    l2: float = Field(1.0, gt=0, description="weight of the L2 penalty on the coefficients (not the intercept)")
    iterations: int = Field(50, ge=1, description="Newton steps at most (it stops earlier once converged)")
    min_examples: int = Field(20, ge=2, description="fewer labelled training calls than this: no fit")
    seed: int = Field(0, description="which episodes are held out (one in five, by a hash of the id and this seed)")


class VerlSettings(Section):
    """The settings AgentGym passes to Agent Lightning's VERL trainer (GRPO); everything else
    is Agent Lightning's and verl's own defaults (see `agentgym.trainer.lightning.verl_config`)."""

    model_path: str | None = Field(None, description="the weights VERL loads and trains (a Hugging Face name or a "
                                   "local folder); default: lightning.planner_model")
    rollouts_per_context: int = Field(4, ge=2, description="GRPO's group: rollouts of the same recorded context "
                                      "(actor_rollout_ref.rollout.n); advantages are relative within it")
    train_batch_size: int = Field(8, ge=1, description="recorded contexts per training step (data.train_batch_size)")
    ppo_mini_batch_size: int = Field(8, ge=1, description="contexts per PPO mini-batch; divides train_batch_size")
    learning_rate: float = Field(1e-6, gt=0, description="actor learning rate")
    total_epochs: int = Field(2, ge=1, description="passes over the replay dataset")
    max_prompt_length: int = Field(4096, ge=64, description="tokens of a recorded context (messages and tools)")
    max_response_length: int = Field(512, ge=16, description="tokens of the planner's answer (a tool call)")
    trace_aggregator: Literal["transition", "trajectory"] = Field(
        "trajectory", description="Agent Lightning's trace aggregation: trajectory merges a rollout's calls that "
        "extend each other into one training row; transition keeps every call a row of its own")
    max_ppo_update_times: int | None = Field(2, ge=1, description="PPO mini-batch updates per step at most "
                                             "(Agent Lightning recommends 2); null: no cap")
    rollout_timeout_s: int = Field(300, ge=1, description="a replay rollout still running after this fails")
    n_gpus_per_node: int = Field(1, ge=1)
    nnodes: int = Field(1, ge=1)
    gpu_memory_utilization: float = Field(0.6, gt=0, le=1, description="vLLM's share of each GPU's memory")
    checkpoint_dir: Path = Field(Path("lightning-checkpoints"), description="where VERL writes checkpoints "
                                 "(trainer.default_local_dir)")

    @model_validator(mode="after")
    def _batches(self) -> VerlSettings:
        if self.ppo_mini_batch_size > self.train_batch_size or self.train_batch_size % self.ppo_mini_batch_size:
            raise ValueError(f"ppo_mini_batch_size ({self.ppo_mini_batch_size}) must divide train_batch_size "
                             f"({self.train_batch_size})")
        return self


class LightningConfig(Section):
    """The Agent Lightning engine, for planners that are LLMs (`agentgym train --engine lightning`):
    the model that plans, the OpenAI-compatible server that serves it, Agent Lightning's server
    (`agl-server`) and the VERL trainer's settings."""

    planner_model: str | None = Field(None, description="the planner LLM, as its server names it (e.g. "
                                      "Qwen/Qwen2.5-1.5B-Instruct); required by the lightning engine")
    model_server_url: str | None = Field(None, description="the OpenAI-compatible server serving planner_model "
                                         "(vLLM or any you control), e.g. http://127.0.0.1:8000/v1")
    server_url: str = Field("http://127.0.0.1:8181", description="Agent Lightning's server (agl-server: rollouts, "
                            "events, model registry, gateway); not 8080, AgentGym's own default port")
    key_env: str = Field("AGL_KEY", description="environment variable holding agl-server's key (its `key=`); "
                         "never written to the configuration, the store or logs")
    min_contexts: int = Field(20, ge=2, description="fewer recorded contexts (with tools offered) than this: no run")
    gateway: bool = Field(False, description="the proxy's LLM planner asks the live version through agl-server's "
                          "gateway (each episode an Agent Lightning rollout with its planner calls and, once its "
                          "feedback comes, its reward); off: it asks each version's server directly")
    planner: Literal["ask", "upstream"] = Field(
        "ask", description="ask: the proxy asks an LLM planner version which tool the agent uses (a call of its "
        "own); upstream: the agent's own upstream is the self-hosted planner model, so no call is added: the "
        "agent's requests go through agl-server's gateway as the rollout's model requests and the model's tool "
        "choice is recorded as the decision (needs planner_model and gateway)")
    planner_timeout_s: float = Field(5.0, gt=0, description="an LLM planner's answer later than this: the request "
                                     "goes to the model unchanged (and the failure is counted)")
    planner_temperature: float = Field(1.0, ge=0, description="the LLM planner's sampling temperature when asked "
                                       "directly (through the gateway, agl-server's default_proxy.train.temperature "
                                       "applies: its gateway sets it)")
    planner_max_tokens: int = Field(64, ge=1, description="the most tokens of the LLM planner's answer (a tool call "
                                    "or a few tool names)")
    reward_model: RewardModelConfig = RewardModelConfig()
    verl: VerlSettings = VerlSettings()

    @field_validator("model_server_url")
    @classmethod
    def _model_server(cls, value: str | None) -> str | None:
        return http_url(value, "lightning.model_server_url")

    @field_validator("server_url")
    @classmethod
    def _server(cls, value: str) -> str:
        return http_url(value, "lightning.server_url")

    @field_validator("planner_model")
    @classmethod
    def _model_name(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("lightning.planner_model is empty: name the model, or leave it out")
        return value

    @model_validator(mode="after")
    def _upstream_mode(self) -> LightningConfig:
        if self.planner == "upstream" and not (self.gateway and self.planner_model):
            raise ValueError("lightning.planner: upstream sends the agent's requests through agl-server's gateway: "
                             "set lightning.gateway: true and lightning.planner_model (the name agl-server's "
                             "default_proxy.model_name serves)")
        return self


class OutcomeRules(Section):
    """How a `role: "tool"` message's content is read as success, error or unknown."""

    error_keys: list[str] = ["error", "errors", "exception", "error_message", "err"]
    status_keys: list[str] = ["status", "state", "result", "outcome"]
    error_statuses: list[str] = ["error", "failed", "failure", "fail", "exception", "invalid", "denied"]
    success_statuses: list[str] = ["ok", "success", "succeeded", "done", "completed", "complete"]
    error_patterns: list[str] = [
        r"^\s*(error|exception|traceback|failed|failure)\b",
        r"\b[A-Za-z_]*(Error|Exception)\s*:",
        r'^\s*\{?\s*"?status"?\s*:\s*(4|5)\d\d\b',
    ]
    empty_is: Literal["success", "error", "unknown"] = "unknown"
    text_is: Literal["success", "error", "unknown"] = "success"


class EpisodeConfig(Section):
    link_cache_size: int = Field(200_000, description="recent messages and tool calls kept for automatic linking")
    idle_timeout_s: float = Field(300.0, description="an episode with no feedback is finished after this idle time")
    success_reward_threshold: float = Field(0.5, description="feedback reward at or above this counts as success")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AGENTGYM_", env_nested_delimiter="__", extra="forbid")

    server: ServerConfig = ServerConfig()
    upstream: UpstreamConfig = UpstreamConfig()
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    pricing: dict[str, ModelPrice] = Field(default_factory=dict, description="prices for models litellm does not know")
    store: StoreConfig = StoreConfig()
    outcomes: OutcomeRules = OutcomeRules()
    episodes: EpisodeConfig = EpisodeConfig()
    planner: PlannerConfig = PlannerConfig()
    trainer: TrainerConfig = TrainerConfig()
    rollout: RolloutConfig = RolloutConfig()
    lightning: LightningConfig = LightningConfig()

    @model_validator(mode="after")
    def _control_baseline(self) -> Settings:
        if self.rollout.baseline == "control" and self.planner.control_share == 0:
            raise ValueError("rollout.baseline 'control' compares canaries with the episodes served by no policy: "
                             "set planner.control_share above 0, or use baseline 'live'")
        return self

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings):
        return (init_settings, env_settings, YamlConfigSettingsSource(settings_cls))


def config_file(explicit: Path | None = None) -> Path | None:
    """The file to read: the flag, then $AGENTGYM_CONFIG, then ./agentgym.yaml if present."""
    if explicit is not None:
        if not explicit.is_file():
            raise FileNotFoundError(f"config file not found: {explicit}")
        return explicit
    from_env = os.environ.get(CONFIG_ENV)
    if from_env:
        return config_file(Path(from_env))
    default = Path(DEFAULT_CONFIG_FILE)
    return default if default.is_file() else None


def load_settings(path: Path | str | None = None, **overrides: object) -> Settings:
    """Settings from file + environment, with `overrides` (nested dicts) from the command line on top."""

    class FileSettings(Settings):
        model_config = SettingsConfigDict(yaml_file=config_file(Path(path) if path is not None else None))

    return FileSettings(**overrides)
