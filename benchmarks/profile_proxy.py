"""Where a proxy spends its CPU under steady load: py-spy samples, summarised.

Starts the stand-in model and one target (agentgym, floor or litellm, as in
proxy_overhead.py), warms it up, then drives open-loop load at --rate for --seconds while
`py-spy record` samples the proxy process (all threads, Python frames). Prints the share
of samples per function: "self" (the innermost frame) and "incl." (anywhere on the stack),
for the code under --focus (default: the agentgym package) and for every file.

py-spy is not a dependency of the project; install it beside LiteLLM:
    uv pip install --python benchmarks/.venv-litellm/bin/python py-spy

    .venv/bin/python benchmarks/profile_proxy.py --target agentgym --rate 300 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from agentgym.scenarios.local_stack import start_model

from proxy_overhead import HERE, LITELLM_VENV, Client, Level, run_level, settle, start_target

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]+)(?::(?P<line>\d+))?\)$")


def _py_spy() -> str:
    found = shutil.which("py-spy") or str(LITELLM_VENV / "bin" / "py-spy")
    if not Path(found).exists():
        raise SystemExit("py-spy not found; see the module docstring")
    return found


def summarise(raw: Path, focus: str, top: int) -> dict:
    """Collapsed stacks -> shares of samples per function (self and inclusive)."""
    self_n: collections.Counter[str] = collections.Counter()
    incl_n: collections.Counter[str] = collections.Counter()
    file_self: collections.Counter[str] = collections.Counter()
    focus_incl = 0
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [f for f in stack.split(";") if f]
        names = []
        for frame in frames:
            m = FRAME.match(frame.strip())
            if m is None:
                names.append((frame.strip(), ""))
                continue
            path = m["file"]
            short = path.split("site-packages/")[-1] if "site-packages/" in path else path
            short = short.split("/work/main/")[-1]
            names.append((f"{short}:{m['func']}", short))
        if names:
            self_n[names[-1][0]] += n
            file_self[names[-1][1].split("/")[0] if "/" in names[-1][1] else names[-1][1]] += n
        for name in set(n_ for n_, _ in names):
            incl_n[name] += n
        if any(focus in file for _, file in names):
            focus_incl += n

    def share(counter: collections.Counter, only_focus: bool) -> list[tuple[str, float, int]]:
        rows = [(k, 100 * v / total, v) for k, v in counter.most_common() if not only_focus or focus in k]
        return rows[:top]

    return {
        "samples": total,
        "focus": focus,
        "focus_inclusive_pct": 100 * focus_incl / total if total else 0,
        "focus_self": share(self_n, True),
        "focus_inclusive": share(incl_n, True),
        "all_self": share(self_n, False),
        "by_package_self": [(k, 100 * v / total, v) for k, v in file_self.most_common(15)],
    }


async def drive(target, model, rate: float, seconds: float, warmup: float, master_key: str) -> dict:
    client = Client(target.port, target.path, master_key, 256)
    counter = [0]
    if warmup:
        await run_level(client, Level(target.name, "nonstream", 20, warmup), proxy_pid=None, model_pid=None,
                        timeout_s=5, counter=counter)
        settle([target.pid, model.process.pid])
    await run_level(client, Level(target.name, "nonstream", rate, 2), proxy_pid=None, model_pid=None,
                    timeout_s=5, counter=counter)
    return {"client": client, "counter": counter}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", default="agentgym", choices=["agentgym", "floor", "litellm"])
    p.add_argument("--rate", type=float, default=300)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--mode", default="nonstream", choices=["nonstream", "stream"])
    p.add_argument("--warmup", type=float, default=16)
    p.add_argument("--focus", default="agentgym/", help="path substring of the code to rank")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--gil", action="store_true", help="only sample the thread holding the GIL (py-spy --gil)")
    p.add_argument("--out", type=Path, default=None, help="keep the collapsed stacks here")
    args = p.parse_args()
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

    workdir = Path(tempfile.mkdtemp(prefix="agentgym-profile-"))
    master_key = "sk-bench-profile"
    model = start_model(workdir)
    target = start_target(args.target, model, workdir, master_key)
    raw = args.out or workdir / "stacks.txt"
    try:
        import uvloop

        async def run() -> dict:
            state = await drive(target, model, args.rate, args.seconds, args.warmup, master_key)
            spy = subprocess.Popen(
                [_py_spy(), "record", "--pid", str(target.pid), "--rate", "250", "--format", "raw",
                 "--duration", str(int(args.seconds)), "--output", str(raw), "--subprocesses", "--nonblocking", *(["--gil"] if args.gil else [])],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )
            time.sleep(0.5)
            level = await run_level(state["client"], Level(target.name, args.mode, args.rate, args.seconds),
                                    proxy_pid=target.pid, model_pid=model.process.pid, timeout_s=5,
                                    counter=state["counter"])
            try:
                _, err = spy.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                spy.terminate()
                _, err = spy.communicate()
            if spy.returncode:
                print(err.decode(errors="replace")[-2000:])
            return level.summary()

        summary = uvloop.run(run())
    finally:
        target.stop()
        model.stop()
    print(f"load: {args.rate:.0f}/s {args.mode} for {args.seconds:.0f}s: p50 {summary['p50_ms']:.2f} ms, "
          f"p99 {summary['p99_ms']:.2f} ms, errors {summary['errors']}/{summary['sent']}, "
          f"proxy {summary['proxy_cpu_ms_per_req']:.2f} CPU-ms/req")
    result = summarise(raw, args.focus, args.top)
    print(f"py-spy samples: {result['samples']}; stacks with {args.focus} code: {result['focus_inclusive_pct']:.1f}%")
    for title, key in (("self, by package", "by_package_self"), (f"self, {args.focus}", "focus_self"),
                       (f"inclusive, {args.focus}", "focus_inclusive"), ("self, everything", "all_self")):
        print(f"\n-- {title} (% of samples)")
        for name, pct, n in result[key]:
            print(f"{pct:6.1f}%  {n:6d}  {name}")
    out = HERE / "results" / f"profile-{args.target}-{args.mode}-{int(args.rate)}rps{'-gil' if args.gil else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "load": summary, **result}, indent=1))
    print(f"\nsummary: {out}")
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
