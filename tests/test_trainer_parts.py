"""The trainer's parts on hand-made data: rewards, advantages, the policy's actions, the gate, the registry."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import orjson
import pytest

from agentgym.config import PlannerConfig, RewardRule
from agentgym.dashboards.report import registry_part
from agentgym.trainer.batch import Batch, Step, advantages, rewards
from agentgym.trainer.gate import evaluate
from agentgym.trainer.policy import (DEFER, OFFER, PolicyWeights, action_of, bucket, choice_probability, choose,
                                     probabilities)
from agentgym.trainer import by_hand
from agentgym.trainer.registry import CorruptPolicy, Registry


def test_episode_outcome_is_broadcast_with_step_terms_and_each_episode_weighs_one():
    rule = RewardRule(success=1.0, failure=0.0, tool_success=0.1, tool_error=-0.5, per_1k_prompt_tokens=-0.01)
    steps = [Step("a", True, 1, 0, 2000), Step("a", True, 0, 1, 1000), Step("a", True, 0, 0, 0),
             Step("b", False, 0, 2, 500)]
    reward, weight = rewards(steps, rule)
    assert reward == pytest.approx([1 + 0.1 - 0.02, 1 - 0.5 - 0.01, 1.0, 0 - 1.0 - 0.005])
    assert weight == pytest.approx([1 / 3, 1 / 3, 1 / 3, 1.0])
    per_episode = np.bincount([0, 0, 0, 1], weights=weight)
    assert per_episode == pytest.approx([1.0, 1.0])  # a long episode does not outweigh a short one


def test_advantages_are_relative_to_the_group_of_the_same_request():
    episodes = ["e1", "e2", "e3", "e3", "e4"]
    groups = np.array([0, 0, 1, 1, 2])  # e1, e2 opened alike; e3 alone; e4 alone
    reward = np.array([1.0, 0.0, 0.5, 0.5, 0.2])
    weight = np.array([1.0, 1.0, 0.5, 0.5, 1.0])
    adv = advantages(reward, weight, groups, episodes)
    batch_mean, batch_std = np.mean([1.0, 0.0, 0.5, 0.2]), np.std([1.0, 0.0, 0.5, 0.2])
    assert adv[0] == pytest.approx(0.5 / batch_std, abs=1e-4) and adv[1] == pytest.approx(-0.5 / batch_std, abs=1e-4)
    assert adv[2] == pytest.approx((0.5 - batch_mean) / batch_std, abs=1e-4)  # a group of one: the whole batch
    assert adv[4] == pytest.approx((0.2 - batch_mean) / batch_std, abs=1e-4)


def test_a_group_that_differs_by_a_few_tokens_gets_advantages_as_small():
    """Scaled by the batch's spread, not the group's own: two successful episodes 100 prompt
    tokens apart (0.001 of reward) must not outweigh a success against a failure."""
    episodes = ["a1", "a2", "b1", "b2"]
    groups = np.array([0, 0, 1, 1])
    reward = np.array([0.999, 0.998, 1.0, 0.0])
    adv = advantages(reward, np.ones(4), groups, episodes)
    assert abs(adv[0]) < 0.01 and abs(adv[1]) < 0.01
    assert adv[2] > 0.9 and adv[3] < -0.9


def test_the_policy_samples_force_offer_or_defer_and_records_propensity():
    config = PlannerConfig(epsilon=0.0, coverage=0.9, max_offered=3)
    rng = np.random.default_rng(0)
    scores = np.log([0.1, 0.5, 0.3, 0.1])  # four tools: tool 1 on top, then 2, then 0 and 3
    probs = np.array([0.5, 0.2, 0.3])  # force, offer, defer
    choices = [choose(scores, probs, config, rng) for _ in range(2000)]
    forced = [c for c in choices if c.action == "force"]
    assert forced and all(c.tool == 1 and c.offered == [1] and c.propensity == pytest.approx(0.5) for c in forced)
    offers = [c for c in choices if c.action == "offer"]
    # the likeliest tools by their scores' softmax, up to 90% of it, at most three
    assert offers and all(c.tool == OFFER and c.offered == [0, 1, 2] and c.propensity == pytest.approx(0.2)
                          for c in offers)
    defers = [c for c in choices if c.action == "defer"]
    assert all(c.tool == DEFER and c.offered == [0, 1, 2, 3] for c in defers)
    share = {a: sum(c.action == a for c in choices) / len(choices) for a in ("force", "offer", "defer")}
    assert share == pytest.approx({"force": 0.5, "offer": 0.2, "defer": 0.3}, abs=0.04)  # sampled as scored


def test_exploration_is_over_the_three_actions_and_a_logged_force_of_a_tool_no_longer_on_top_has_probability_0():
    weights = PolicyWeights.zero_shot(8, b_defer=40.0)  # defer; offer one time in eight; force only to explore
    context, tools = np.eye(8)[0], np.eye(8)[1:5]
    tools[:, 0] = [0.1, 0.9, 0.3, 0.0]  # each tool's similarity to the context
    scores = weights.tool_scores(context, tools, np.arange(4))
    probs = probabilities(weights.action_scores(scores), epsilon=0.06)
    offer = np.exp(-2) / (1 + np.exp(-2))
    assert probs == pytest.approx([0.02, 0.94 * offer + 0.02, 0.94 * (1 - offer) + 0.02])
    assert int(np.argmax(scores)) == 1
    assert choice_probability(1, scores, probs) == pytest.approx(0.02)  # forcing the top tool
    assert choice_probability(0, scores, probs) == 0.0  # a tool these weights would never force
    assert choice_probability(OFFER, scores, probs) == probs[1] and choice_probability(DEFER, scores, probs) == probs[2]
    # a logged offer is these weights' action only if it kept their top tool
    assert choice_probability(OFFER, scores, probs, np.array([True, True, False, False])) == probs[1]
    assert choice_probability(OFFER, scores, probs, np.array([True, False, True, True])) == 0.0


def _batch(rewards_: list[float], choices: list[int], propensities: list[float]) -> Batch:
    n = len(rewards_)
    return Batch([f"d{i}" for i in range(n)], [f"e{i}" for i in range(n)], ["v1"] * n, ["x"] * n, [["h"]] * n,
                 np.array(choices), np.array(propensities), np.array(rewards_, float), np.ones(n), np.arange(n), {},
                 np.full(n, -1), np.full(n, -1))


def test_gate_refuses_a_policy_that_is_worse_on_logged_data():
    # Logged: choice 0 paid 1, choice 1 paid 0, each sampled with probability 0.5.
    batch = _batch([1, 0] * 50, [0, 1] * 50, [0.5] * 100)
    behaviour = np.full(100, 0.5)
    worse = np.where(batch.choices == 0, 0.1, 0.9)  # prefers what paid nothing
    better = np.where(batch.choices == 0, 0.9, 0.1)
    refused = evaluate(batch, worse, behaviour)
    assert refused["current"] == pytest.approx(0.5)  # the serving policy's own estimate: what it logged
    assert not refused["passed"] and refused["new"] == pytest.approx(0.1) and refused["ci95"][1] < 0
    admitted = evaluate(batch, better, behaviour)
    assert admitted["passed"] and admitted["new"] == pytest.approx(0.9)


def test_gate_refuses_a_policy_that_takes_none_of_the_logged_choices_with_no_estimate():
    # Logged: forces of tool 0; the new weights would force another tool, so none of these is theirs.
    batch = _batch([1, 0] * 10, [0] * 20, [0.5] * 20)
    verdict = evaluate(batch, np.zeros(20), np.full(20, 0.5))
    assert not verdict["passed"] and verdict["difference"] is None and verdict["ci95"] is None
    assert "none of the logged choices" in verdict["reason"]
    assert evaluate(batch.only(np.zeros(20, bool)), np.zeros(0), np.zeros(0))["difference"] is None  # nothing held out


def test_gate_reports_no_planner_and_admits_a_policy_better_than_the_current_that_is_still_below_it():
    """Refusing it would keep the worse policy serving; the rollout's control arm measures no planner."""
    # Logged: deferring paid 1, forcing tool 0 paid 0, each sampled with probability 0.5.
    batch = _batch([1, 0] * 50, [DEFER, 0] * 50, [0.5] * 100)
    behaviour = np.full(100, 0.5)
    better_than_current = np.where(batch.choices == DEFER, 0.6, 0.4)
    verdict = evaluate(batch, better_than_current, behaviour)
    assert verdict["difference"] == pytest.approx(0.1) and verdict["untrained"]["value"] == pytest.approx(1.0)
    assert verdict["untrained"]["difference"] == pytest.approx(-0.4) and verdict["passed"]
    worse_than_current = np.where(batch.choices == DEFER, 0.4, 0.6)
    assert not evaluate(batch, worse_than_current, behaviour)["passed"]  # worse than the current: refused
    assert evaluate(batch, np.where(batch.choices == DEFER, 1.0, 0.0), behaviour)["untrained"]["difference"] == 0.0


def test_registry_refuses_a_corrupt_artifact_and_rolls_back(tmp_path):
    registry = Registry(tmp_path / "policies")
    weights = PolicyWeights.zero_shot(8)
    v1 = registry.register(weights, parent=None, encoder="e", encoder_checksum="c", training={}, gate={})
    v2 = registry.register(weights, parent=v1.version, encoder="e", encoder_checksum="c", training={}, gate={})
    registry.promote(v1.version, by="test", reason="first")
    registry.promote(v2.version, by="test", reason="better")
    assert registry.index().live == "v2" and registry.index().versions["v1"].status == "retired"
    assert registry.rollback(by="test", reason="worse in canary").version == "v1"
    assert registry.index().versions["v2"].status == "rolled_back"
    assert [h["by"] for h in registry.index().versions["v2"].history] == ["test", "test"]
    artifact = tmp_path / "policies" / "v2.npz"
    artifact.write_bytes(artifact.read_bytes()[:-10])
    with pytest.raises(CorruptPolicy, match="checksum"):
        registry.load("v2")
    with pytest.raises(CorruptPolicy):
        registry.promote("v2", by="test", reason="again")
    assert registry.index().live == "v1"
    with pytest.raises(ValueError, match="shape"):
        PolicyWeights.from_bytes(PolicyWeights(**{**weights.arrays(), "b": np.zeros(3, np.float32)}).to_bytes())


def test_weight_decay_keeps_the_learned_terms_near_the_text_prior_and_leaves_its_scale():
    """Decay pulls what the update learns toward zero (text similarity alone), the shared terms
    (`weight_decay`) and each tool's own (`tool_weight_decay`) each by its own setting; alpha and
    the action scores are not decayed."""
    from agentgym.config import TrainerConfig
    from agentgym.trainer.encoder import shared_encoder
    from agentgym.trainer.engine import TorchEngine

    encoder = shared_encoder()
    specs = {"ha": ("refund_order", "refund order: money back (order_id)"),
             "hb": ("cancel_order", "cancel order: stop an order (order_id)")}
    n = 40
    contexts = [f"please refund order {i}" if i % 2 else f"cancel order {i} now" for i in range(n)]
    worked = np.array([1 if (i % 2 == 0) == (i % 4 < 2) else 0 for i in range(n)])  # half the forced tools worked
    batch = Batch([f"d{i}" for i in range(n)], [f"e{i}" for i in range(n)], ["v1"] * n, contexts, [["ha", "hb"]] * n,
                  np.array([i % 4 // 2 for i in range(n)]), np.full(n, 0.4), worked.astype(float), np.ones(n),
                  np.arange(n) % 2, specs, np.array([i % 4 // 2 for i in range(n)]), worked)
    start = PolicyWeights.zero_shot(encoder.dimensions, seed=0)
    learned = {}
    for shared, own in ((0.0, 0.0), (2.0, 2.0), (2.0, 0.0)):
        config = TrainerConfig(weight_decay=shared, tool_weight_decay=own, device="cpu")
        learned[shared, own], _ = TorchEngine().update(batch, start, encoder, config, 0.05)
    tools_own = lambda w: float(np.abs(w.U).sum() + np.abs(w.b).sum())  # noqa: E731
    shared_terms = lambda w: float(np.abs(w.P).sum() + np.abs(w.Q).sum())  # noqa: E731
    assert tools_own(learned[2.0, 2.0]) < 0.5 * tools_own(learned[0.0, 0.0])
    assert shared_terms(learned[2.0, 2.0]) < 0.5 * shared_terms(learned[0.0, 0.0])
    assert tools_own(learned[2.0, 0.0]) > 2 * tools_own(learned[2.0, 2.0])  # each setting decays its own terms
    assert shared_terms(learned[2.0, 0.0]) < 0.5 * shared_terms(learned[0.0, 0.0])
    assert abs(float(learned[2.0, 2.0].alpha[0]) - float(learned[0.0, 0.0].alpha[0])) < 1.0  # its scale is not decayed


def _refund_or_cancel():
    """Two tools and a refund request, a first version leaning to defer, and its action probabilities."""
    from agentgym.trainer.encoder import shared_encoder

    encoder = shared_encoder()
    specs = {"ha": ("refund_order", "refund order: money back (order_id)"),
             "hb": ("cancel_order", "cancel order: stop an order (order_id)")}
    start = PolicyWeights.zero_shot(encoder.dimensions, context_dimensions=encoder.dimensions_with_words,
                                    b_defer=1.0, seed=0)
    context, tools = encoder.encode_with_words("please refund order 7"), encoder.encode_many_with_words([text for _, text in specs.values()])
    buckets = np.array([bucket(name) for name, _ in specs.values()])
    before = probabilities(start.action_scores(start.tool_scores(context, tools, buckets)), 0.01)
    return encoder, specs, start, context, tools, buckets, before


def test_the_update_moves_probability_toward_the_action_that_paid_and_keeps_the_ranking_for_the_outcome_term():
    from agentgym.config import TrainerConfig
    from agentgym.trainer.engine import TorchEngine

    encoder, specs, start, context, tools, buckets, before = _refund_or_cancel()
    n = 60
    choices = np.array([OFFER, DEFER, 0] * (n // 3))  # offers paid, defers and forces did not
    batch = Batch([f"d{i}" for i in range(n)], [f"e{i}" for i in range(n)], ["v1"] * n, ["please refund order 7"] * n,
                  [["ha", "hb"]] * n, choices, np.array([before[action_of(int(c))] for c in choices]),
                  (choices == OFFER).astype(float), np.ones(n), np.zeros(n, np.int64), specs, np.full(n, -1),
                  np.full(n, -1))
    new, _ = TorchEngine().update(batch, start, encoder, TrainerConfig(device="cpu"), 0.01)
    after = probabilities(new.action_scores(new.tool_scores(context, tools, buckets)), 0.01)
    assert after[1] > before[1] * 1.1 and after[2] < before[2] and after[0] < before[0]
    assert np.array_equal(new.U, start.U) and np.array_equal(new.b, start.b)  # no outcomes: the ranking is not taught


def test_earlier_versions_decisions_teach_the_tool_scores_but_not_the_actions():
    from agentgym.config import TrainerConfig
    from agentgym.trainer.engine import TorchEngine

    encoder, specs, start, context, tools, buckets, before = _refund_or_cancel()
    n = 60
    serving = np.arange(n) < 30  # the serving version deferred, half its episodes paid; no call is labelled
    choices = np.where(serving, DEFER, OFFER)  # an earlier version offered, and every offer paid ...
    called = np.where(serving, -1, 1)  # ... with cancel_order called, and working, where refund reads closer
    batch = Batch([f"d{i}" for i in range(n)], [f"e{i}" for i in range(n)], ["v2"] * 30 + ["v1"] * 30,
                  ["please refund order 7"] * n, [["ha", "hb"]] * n, choices,
                  np.array([before[action_of(int(c))] for c in choices]), np.where(serving, np.arange(n) % 2, 1.0),
                  np.ones(n), np.zeros(n, np.int64), specs, called, np.where(serving, -1, 1), on_policy=serving)
    new, stats = TorchEngine().update(batch, start, encoder, TrainerConfig(device="cpu"), 0.01)
    scores = new.tool_scores(context, tools, buckets)
    prior = start.tool_scores(context, tools, buckets)
    assert prior[1] < prior[0] and scores[1] > scores[0]  # cancel_order now ranks first
    assert new.beta[0] < start.beta[0] == 0  # the tool sharing the request's word ("refund") was the wrong one
    assert np.array_equal(new.b, start.b) and not np.array_equal(new.U, start.U)  # each tool's facts, by request
    after = probabilities(new.action_scores(scores), 0.01)
    assert stats["decisions"] == 30 and stats["earlier_decisions"] == 30 and stats["outcome_decisions"] == 30
    batch.on_policy = None  # the same offers in the ratio: "offer" would grow
    everything, _ = TorchEngine().update(batch, start, encoder, TrainerConfig(device="cpu"), 0.01)
    offered_more = probabilities(everything.action_scores(everything.tool_scores(context, tools, buckets)), 0.01)
    assert offered_more[1] > 1.1 * before[1] and after[1] < 1.02 * before[1]


def test_fine_tuning_the_encoder_moves_it_toward_the_tool_that_worked():
    """The GPU path, run here on the CPU at a toy size: the loss's gradient reaches MiniLM's weights."""
    from agentgym.config import TrainerConfig
    from agentgym.trainer.encoder import shared_encoder
    from agentgym.trainer.engine import TorchEngine
    from agentgym.trainer.transformer_encoder import TransformerEncoder

    encoder = TransformerEncoder(device="cpu")
    specs = {"ha": ("refund_order", "refund order: money back (order_id)"),
             "hb": ("cancel_order", "cancel order: stop an order (order_id)")}
    buckets = np.array([bucket(name) for name, _ in specs.values()])
    n = 16
    contexts = [f"I no longer want order {i}" for i in range(n)]  # says neither word: the text prior cannot tell
    choices = np.array([i % 2 for i in range(n)])  # forced refund_order (0) or cancel_order (1) ...
    paid = (choices == 1).astype(float)  # ... and only cancelling worked
    batch = Batch([f"d{i}" for i in range(n)], [f"e{i}" for i in range(n)], ["v1"] * n, contexts, [["ha", "hb"]] * n,
                  choices, np.full(n, 0.4), paid, np.ones(n), np.zeros(n, np.int64), specs, choices, paid.astype(int))
    start = PolicyWeights.zero_shot(encoder.dimensions, seed=0)

    def cancel_margin(weights: PolicyWeights) -> float:  # how much higher cancel_order scores than refund_order
        tools = encoder.encode_many_with_words([text for _, text in specs.values()])
        return float(np.mean([np.diff(weights.tool_scores(c, tools, buckets))[0] for c in encoder.encode_many(contexts)]))

    untuned = cancel_margin(start)
    config = TrainerConfig(steps=8, device="cpu", learning_rate=1e-9, weight_decay=0.0)  # the scorer stays put
    new, stats = TorchEngine(encoder_learning_rate=1e-4, minibatch=8).update(batch, start, encoder, config, 0.05)
    assert stats["encoder"] == "tuned" and np.allclose(new.U, start.U, atol=1e-6)
    assert cancel_margin(new) > untuned + 5.0, (untuned, cancel_margin(new))  # the encoder alone learned it
    with pytest.raises(ValueError, match="trainable"):
        TorchEngine(encoder_learning_rate=1e-4).update(batch, start, shared_encoder(), config, 0.05)


def test_the_engine_and_the_gpu_benchmarks_import_without_duckdb():
    """The GPU machine has torch but no duckdb: the trainer and the proxy's planner name it for types only."""
    code = ("import sys; sys.modules['duckdb'] = None; sys.path.insert(0, 'benchmarks')\n"
            "import agentgym.trainer.rounds, agentgym.trainer.transformer_encoder, bfcl_heldout, planner_speed")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-2000:]


def _registry_with_three(tmp_path) -> tuple[Registry, str, str, str]:
    """A registry of three versions, the first live."""
    registry = Registry(tmp_path / "policies")
    weights = PolicyWeights.zero_shot(8)
    v1, v2, v3 = (registry.register(weights, parent=None, encoder="e", encoder_checksum="c", training={}, gate={}).version
                  for _ in range(3))
    registry.promote(v1, by="test", reason="first")
    return registry, v1, v2, v3


def test_rollout_status_leaves_the_control_share_out_of_the_live_versions(tmp_path):
    registry, v1, v2, v3 = _registry_with_three(tmp_path)
    registry.start_canary(v2, 5, by="test", reason="try")
    status = by_hand.rollout_status(registry.index(), control_share=0.1)
    assert (status["live_percent"], status["control_percent"], status["canary"]["percent"]) == (85, 10, 5)
    served = {p["version"]: p["traffic_pct"] for p in registry_part(registry, 0.1)["policies"]}
    assert served == {v1: 85, v2: 5, v3: 0}


def test_registry_canary_starts_moves_ends_in_promotion_or_rollback(tmp_path):
    registry, v1, v2, v3 = _registry_with_three(tmp_path)
    with pytest.raises(ValueError, match="live already"):
        registry.start_canary(v1, 5, by="test", reason="no")
    with pytest.raises(ValueError, match="promote it"):
        registry.start_canary(v2, 100, by="test", reason="no")
    registry.start_canary(v2, 5, by="test", reason="try")
    registry.start_canary(v2, 25, by="test", reason="next step")
    assert registry.index().canary.percent == 25 and registry.index().versions[v2].status == "canary"
    with pytest.raises(ValueError, match=f"{v2} is in canary"):
        registry.start_canary(v3, 5, by="test", reason="no")
    assert registry.rollback(by="test", reason="worse").version == v1  # the canary ends; v1 keeps serving
    assert registry.index().canary is None and registry.index().versions[v2].status == "rolled_back"
    registry.start_canary(v3, 50, by="test", reason="try")
    registry.promote(v3, by="test", reason="better")
    index = registry.index()
    assert index.live == v3 and index.canary is None and index.versions[v1].status == "retired"
    assert [h["to"] for h in index.versions[v3].history] == ["canary", "live"]
    # the controller acts only on the canary it looked at: here a person rolled it back in between
    registry.start_canary(v2, 5, by="test", reason="again")
    registry.rollback(by="person", reason="no")
    assert not registry.settle_canary(v2, "promote", by="rollout", reason="passed")
    assert registry.index().live == v3 and registry.index().versions[v2].status == "rolled_back"
    registry.start_canary(v2, 5, by="test", reason="once more")
    looked_at = registry.index().canary.step_started_at
    # ... or restarted it at another step: the 5% step's analysis no longer applies
    time.sleep(0.01)
    registry.start_canary(v2, 50, by="person", reason="more traffic")
    assert not registry.settle_canary(v2, 25.0, by="rollout", reason="5% step passed", step_started_at=looked_at)
    assert registry.index().canary.percent == 50
    registry.start_canary(v2, 5, by="test", reason="once more")
    looked_at = registry.index().canary.step_started_at
    assert registry.settle_canary(v2, 25.0, by="rollout", reason="5% step passed", step_started_at=looked_at)
    assert registry.index().canary.percent == 25 and registry.settle_canary(v2, "promote", by="rollout", reason="ok")
    assert registry.index().live == v2 and registry.index().canary is None


def test_registry_shadow_moves_on_to_canary_or_is_ended_by_rollback(tmp_path):
    registry, v1, v2, v3 = _registry_with_three(tmp_path)
    with pytest.raises(ValueError, match="serves already"):
        registry.start_shadow(v1, by="test", reason="no")
    registry.start_shadow(v2, by="test", reason="look")
    registry.start_shadow(v3, by="test", reason="look instead")
    assert registry.index().shadow_version == v3 and registry.index().versions[v2].status == "candidate"
    registry.start_canary(v3, 5, by="test", reason="serve some")  # shadow -> canary
    assert registry.index().shadow is None and registry.index().canary.version == v3
    registry.start_shadow(v2, by="test", reason="look again")
    assert registry.rollback(by="test", reason="canary worse").version == v1  # the canary ends first
    assert registry.index().shadow_version == v2
    assert registry.rollback(by="test", reason="enough").version == v1  # then the shadow
    assert registry.index().shadow is None and registry.index().versions[v2].status == "rolled_back"
    assert registry.index().live == v1
    older = orjson.loads(registry.index_path.read_bytes())  # an index written when a shadow was just its name
    registry.index_path.write_bytes(orjson.dumps({**older, "shadow": v3}))
    assert registry.index().shadow_version == v3 and registry.index().shadow.started_at == 0.0


def test_rounds_wait_while_a_shadow_is_judged_and_run_once_it_has_gone_on(tmp_path):
    """A round's version would replace the shadow before its verdict (with a round every 100
    episodes and a shadow judged on 100, none ever served): rounds wait until it has gone on."""
    from contextlib import nullcontext

    from agentgym.config import RolloutConfig, TrainerConfig
    from agentgym.store.queries import Scope
    from agentgym.trainer.encoder import shared_encoder
    from agentgym.trainer.rounds import Schedule, judged_shadow, train_round

    registry, v1, v2, _ = _registry_with_three(tmp_path)
    registry.start_shadow(v2, by="test", reason="judge it")
    trainer, rollout = TrainerConfig(every_s=0.01, every_episodes=None), RolloutConfig()
    schedule = Schedule(trainer, PlannerConfig(), Scope(idle_timeout_s=300.0), registry, nullcontext,
                        shared_encoder, rollout)
    time.sleep(0.02)  # a round is due by the clock
    assert not schedule.due(None)
    waited = train_round(None, registry, shared_encoder(), trainer, PlannerConfig(), rollout,
                         Scope(idle_timeout_s=300.0), by="cli")  # `agentgym train --once` waits too, and says why
    assert waited["status"] == "waiting" and waited["shadow"] == v2 and "roll it back" in waited["reason"]
    # where nothing judges a shadow on the trainer's behalf, a round does not wait for one
    assert judged_shadow(registry.index(), TrainerConfig(promote="auto"), rollout) is None
    assert judged_shadow(registry.index(), trainer, RolloutConfig(shadow=False)) is None
    assert registry.settle_shadow(v2, rollout.steps[0], by="rollout", reason="passed")  # judged: on to its canary
    assert schedule.due(None) and registry.index().live == v1


def test_a_refused_canary_or_shadow_leaves_its_place_empty_and_the_live_version_serving(tmp_path):
    from agentgym.proxy.planner import Planner
    from agentgym.trainer.encoder import shared_encoder

    encoder = shared_encoder()
    registry = Registry(tmp_path / "policies")
    v1, v2, v3, v4 = (registry.register(PolicyWeights.zero_shot(encoder.dimensions), parent=None, encoder="e",
                                        encoder_checksum=encoder.checksum, training={}, gate={}).version
                      for _ in range(4))
    registry.promote(v1, by="test", reason="first")
    registry.start_canary(v2, 10, by="test", reason="try")
    planner = Planner(PlannerConfig(), registry, recorder=None, encoder=encoder)
    planner.refresh()
    assert (planner.live[0].version, planner.canary[0].version) == (v1, v2)
    registry.rollback(by="test", reason="end")
    registry.start_canary(v3, 10, by="test", reason="next")
    registry.start_shadow(v4, by="test", reason="look")
    for version in (v3, v4):  # rotted on disk after the registry accepted them
        (registry.folder / f"{version}.npz").write_bytes(b"not a policy")
    planner.refresh()
    assert planner.live[0].version == v1 and planner.canary is None and planner.shadow is None  # not v2 in v3's place


def test_train_with_rounds_runs_that_many_rounds_and_no_more(tmp_path):
    """`agentgym train --rounds N`: a round falling due while the caller is still busy (the
    dashboard fetching its report) must not run, nor be reported, after the N-th."""
    from agentgym.config import Settings
    from agentgym.trainer.cli_rounds import run_schedule

    told = []  # each round that ran: here "failed", there being no store to train on, so each is quick
    settings = Settings(store={"path": tmp_path / "no-store.duckdb"}, trainer={"every_s": 0.05})
    run_schedule(settings, told.append, rounds=2, tick=lambda: time.sleep(0.4))
    time.sleep(0.5)  # a round let through would run in the scheduler's thread meanwhile
    assert [r["status"] for r in told] == ["failed", "failed"] and "no-store.duckdb" in told[0]["reason"]


def test_a_context_is_encoded_with_its_words_and_weights_from_before_them_score_as_they_did():
    from agentgym.trainer.encoder import WORD_BUCKETS, shared_encoder, word_bag

    encoder = shared_encoder()
    bag = word_bag("Exchange the lamp in order #W123, please; exchange it")
    assert np.isclose(np.linalg.norm(bag), 1.0) and np.count_nonzero(bag) == 5  # exchange, the, lamp, order, please
    assert np.array_equal(bag, word_bag("please EXCHANGE order the lamp #W999"))  # case, order and numbers aside
    assert not np.array_equal(bag, word_bag("Modify the lamp in order #W123, please"))
    text = "I want to exchange the lamp in my delivered order"
    context = encoder.encode_with_words(text)
    assert context.shape == (encoder.dimensions + WORD_BUCKETS,) == (encoder.dimensions_with_words,)
    assert np.array_equal(context[: encoder.dimensions], encoder.encode(text))
    tools = encoder.encode_many(["exchange delivered order items", "modify pending order items"])
    buckets = np.array([bucket("exchange"), bucket("modify")])
    old = PolicyWeights.zero_shot(encoder.dimensions, seed=1)  # trained before the words were read
    old.U[buckets] = np.random.default_rng(0).standard_normal((2, encoder.dimensions))
    assert np.allclose(old.tool_scores(context, tools, buckets), old.tool_scores(encoder.encode(text), tools, buckets))
    widened = PolicyWeights.from_bytes(old.widened(encoder.dimensions_with_words).to_bytes())
    assert widened.U.shape == (old.U.shape[0], encoder.dimensions_with_words)
    assert np.allclose(widened.tool_scores(context, tools, buckets), old.tool_scores(context, tools, buckets))
    widened.U[buckets[0], encoder.dimensions:] = 5 * word_bag("exchange")  # a word only the wide weights read
    assert widened.tool_scores(context, tools, buckets)[0] > old.tool_scores(context, tools, buckets)[0]
    # the tools' words: the untrained ranking ignores them, and a version saved before `beta` loads with 0
    worded = encoder.encode_many_with_words(["exchange delivered order items", "modify pending order items"])
    assert np.allclose(old.tool_scores(context, worded, buckets), old.tool_scores(context, tools, buckets))
    arrays = {k: v for k, v in widened.arrays().items() if k != "beta"}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    saved_before = PolicyWeights.from_bytes(buffer.getvalue())
    assert saved_before.beta[0] == 0
    assert np.allclose(saved_before.tool_scores(context, worded, buckets), widened.tool_scores(context, tools, buckets))
    saved_before.beta[:] = 1.0  # learned: the words a request shares with a tool's text count for it
    shared = worded[:, encoder.dimensions:] @ context[encoder.dimensions:]
    assert shared[0] > shared[1] > 0  # "exchange", "delivered", "order" against "order"
    assert np.allclose(saved_before.tool_scores(context, worded, buckets),
                       widened.tool_scores(context, tools, buckets) + shared)
