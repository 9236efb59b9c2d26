"""Linking calls into episodes by conversation prefix, tool-call id, or header."""

from agentgym.proxy.episodes import EpisodeLinker

SYSTEM = {"role": "system", "content": "be helpful"}
USER = {"role": "user", "content": "cancel order W1"}


def _call(call_id, name="cancel", arguments='{"order_id": "W1"}'):
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def test_a_continued_conversation_stays_in_its_episode():
    linker = EpisodeLinker()
    first = linker.link([SYSTEM, USER], None)
    assert first.kind == "new"
    answer = {"role": "assistant", "content": None, "tool_calls": [_call("call_1")]}
    linker.answered(first, "inf-1", answer)
    # The client echoes the answer with re-encoded arguments and an empty-string content.
    echoed = {"role": "assistant", "content": "", "tool_calls": [_call("call_1", arguments='{"order_id":"W1"}')]}
    second = linker.link([SYSTEM, USER, echoed, {"role": "tool", "tool_call_id": "call_1", "content": "ok"}], None)
    assert (second.episode_id, second.kind) == (first.episode_id, "prefix")
    results = linker.take_results([SYSTEM, USER, echoed, {"role": "tool", "tool_call_id": "call_1", "content": "ok"}])
    assert [(r[0].name, r[1], r[2]) for r in results] == [("cancel", "call_1", "ok")]
    # A result is taken once, not again on every later turn that repeats it.
    assert linker.take_results([{"role": "tool", "tool_call_id": "call_1", "content": "ok"}]) == []


def test_same_opening_different_answers_are_different_episodes():
    linker = EpisodeLinker()
    a = linker.link([SYSTEM, USER], None)
    linker.answered(a, "inf-a", {"role": "assistant", "tool_calls": [_call("call_a")]})
    b = linker.link([SYSTEM, USER], None)
    linker.answered(b, "inf-b", {"role": "assistant", "tool_calls": [_call("call_b")]})
    assert a.episode_id != b.episode_id
    follow_b = [SYSTEM, USER, {"role": "assistant", "tool_calls": [_call("call_b")]}]
    assert linker.link(follow_b, None).episode_id == b.episode_id


def test_longest_prefix_wins_and_header_overrides():
    linker = EpisodeLinker()
    a = linker.link([USER], None)
    reply_a = {"role": "assistant", "content": "which order?"}
    linker.answered(a, "inf-a", reply_a)
    turn2 = [USER, reply_a, {"role": "user", "content": "W1"}]
    assert linker.link(turn2, None).episode_id == a.episode_id
    assert linker.link(turn2, "ep-given").episode_id == "ep-given"
    assert linker.link(turn2, "ep-given").kind == "header"


def test_trimmed_history_links_by_tool_call_id():
    linker = EpisodeLinker()
    a = linker.link([SYSTEM, USER], None)
    linker.answered(a, "inf-a", {"role": "assistant", "tool_calls": [_call("call_9")]})
    trimmed = [{"role": "system", "content": "summary of earlier turns"}, {"role": "tool", "tool_call_id": "call_9", "content": "done"}]
    link = linker.link(trimmed, None)
    assert (link.episode_id, link.kind) == (a.episode_id, "tool_call")


def test_feedback_ids_resolve_to_their_episode_and_the_cache_is_bounded():
    linker = EpisodeLinker(capacity=3)
    a = linker.link([USER], None)
    linker.answered(a, "inf-a", {"role": "assistant", "tool_calls": [_call("call_x")]})
    assert linker.episode_of("inf-a") == a.episode_id
    assert linker.episode_of("call_x") == a.episode_id
    assert linker.episode_of(a.episode_id) == a.episode_id
    for i in range(5):
        linker.link([{"role": "user", "content": str(i)}], None)
    assert linker.episode_of(a.episode_id) is None  # evicted, the store answers from here on
