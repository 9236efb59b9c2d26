"""Rebuilding the answer from SSE bytes split at arbitrary points."""

import orjson

from agentgym.proxy.stream_assembly import StreamAssembler


def _event(delta=None, finish=None, usage=None, choices=True):
    chunk = {"model": "m", "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}] if choices else []}
    if usage:
        chunk["usage"] = usage
    return b"data: " + orjson.dumps(chunk) + b"\r\n\r\n"


def test_parallel_tool_calls_reassemble_across_arbitrary_splits():
    stream = b"".join([
        _event({"role": "assistant"}),
        _event({"tool_calls": [{"index": 0, "id": "c0", "type": "function", "function": {"name": "get_", "arguments": ""}}]}),
        _event({"tool_calls": [{"index": 0, "function": {"name": "weather", "arguments": '{"ci'}}]}),
        _event({"tool_calls": [{"index": 1, "id": "c1", "type": "function", "function": {"name": "get_time", "arguments": '{"tz":'}}]}),
        _event({"tool_calls": [{"index": 0, "function": {"arguments": 'ty":"Paris"}'}}]}),
        _event({"tool_calls": [{"index": 1, "function": {"arguments": '"CET"}'}}]}),
        _event(finish="tool_calls"),
        _event(usage={"prompt_tokens": 10, "completion_tokens": 5}, choices=False),
        b"data: [DONE]\n\n",
    ])
    assembler = StreamAssembler()
    for start in range(0, len(stream), 7):  # 7-byte pieces split events, lines and UTF-8 alike
        assembler.feed(stream[start : start + 7])
    message = assembler.message()
    assert [(c["id"], c["function"]["name"], c["function"]["arguments"]) for c in message["tool_calls"]] == [
        ("c0", "get_weather", '{"city":"Paris"}'),
        ("c1", "get_time", '{"tz":"CET"}'),
    ]
    assert assembler.finish_reason == "tool_calls"
    assert assembler.usage == {"prompt_tokens": 10, "completion_tokens": 5}
    assert assembler.done


def test_text_and_error_events():
    assembler = StreamAssembler()
    assembler.feed(_event({"content": "héllo "}) + _event({"content": "world"}))
    assembler.feed(b'data: {"error": {"message": "overloaded"}}\n\n')
    assert assembler.message() == {"role": "assistant", "content": "héllo world"}
    assert assembler.error == {"message": "overloaded"}
