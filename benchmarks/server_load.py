"""Load test of `xlstm-mlx serve`: N concurrent streaming clients (the official openai client) against a live
server on 127.0.0.1, and the same N requests sent one after another (serial).

For each N: wall time, throughput (generated tokens / wall second), TTFT p50/p99, inter-token latency
p50/p99 (gaps between streamed chunks), the speed-up of concurrent over serial, how many concurrent texts
differ from their serial (greedy) text and from `xlstm-mlx generate --temp 0` (computed in this process with
generate(..., temp=0), what the CLI runs), and the machine's load average around each level. Every request is greedy with the EOS banned (logit_bias), so each one
generates exactly --max-tokens tokens and runs are comparable.

    python benchmarks/server_load.py [--model DIR] [--clients 1 8 32 64] [--max-tokens 48] \
        [--json benchmarks/results/server_load.json] [--md benchmarks/results/server_load.md] \
        [--plot benchmarks/results/server_load.png] [--note "..."] [--server-env OPENBLAS_NUM_THREADS=1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

PROMPTS = ["ROMEO:", "To be, or not to be", "KING HENRY:\nNow", "O", "My lord, the", "First Citizen:\nBefore we",
           "What light", "Friends, Romans, countrymen,", "JULIET:\nAy me!", "Exeunt", "Good night, good night!",
           "Now is the winter of our discontent", "HAMLET:\nA little more than kin", "Enter the KING", "Lady,",
           "If music be the food of love"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(backend: str, model: str, max_batch: int, log: Path, env: dict) -> tuple[subprocess.Popen, str]:
    """`xlstm-mlx serve`, or mlx_lm.server driving the same checkpoint through xlstm_mlx.integrations.mlx_lm."""
    if backend == "xlstm-mlx":
        cmd = [sys.executable, "-m", "xlstm_mlx.cli", "serve", "--model", model, "--port", "0",
               "--max-batch", str(max_batch), "--max-queue", "1024"]
        ready = r"on (http://127\.0\.0\.1:\d+)/v1"
    else:
        port = free_port()
        code = ("import sys, xlstm_mlx.integrations.mlx_lm; from mlx_lm.server import main; "
                f"sys.argv = ['mlx_lm.server', '--model', {model!r}, '--port', '{port}', "
                f"'--decode-concurrency', '{max_batch}']; main()")
        cmd = [sys.executable, "-c", code]
        ready = None
    f = open(log, "w")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=f, env={**os.environ, **env, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if ready is not None:
            m = re.search(ready, log.read_text())
            if m:
                return proc, m.group(1)
        elif "Starting httpd" in log.read_text():
            return proc, f"http://127.0.0.1:{port}"
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server did not start:\n" + log.read_text())


async def one(client, prompt: str, max_tokens: int, eos: dict, model: str) -> dict:
    import openai

    t0 = time.perf_counter()
    times, pieces = [], []
    try:
        stream = await client.completions.create(model=model, prompt=prompt, max_tokens=max_tokens, temperature=0,
                                                 stream=True, logit_bias=eos)
        async for chunk in stream:
            for c in chunk.choices:
                if c.text:
                    times.append(time.perf_counter())
                    pieces.append(c.text)
    except openai.APIError as e:  # counted as a failure (e.g. a refused connection)
        return {"t0": t0, "times": [], "text": None, "error": f"{type(e).__name__}: {e}"}
    return {"t0": t0, "times": times, "text": "".join(pieces)}


def quantile(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))] if v else float("nan")


def summarize(results: list[dict], wall: float, max_tokens: int) -> dict:
    ttft = [r["times"][0] - r["t0"] for r in results if r["times"]]
    itl = [b - a for r in results for a, b in zip(r["times"], r["times"][1:])]
    tokens = sum(len(r["times"]) > 0 for r in results) * max_tokens
    return {"wall_s": wall, "tokens": tokens, "tokens_per_s": tokens / wall,
            "ttft_p50_ms": 1e3 * quantile(ttft, 0.5), "ttft_p99_ms": 1e3 * quantile(ttft, 0.99),
            "itl_p50_ms": 1e3 * quantile(itl, 0.5), "itl_p99_ms": 1e3 * quantile(itl, 0.99)}


async def run_level(url: str, n: int, max_tokens: int, eos: dict, model: str, greedy: dict | None) -> dict:
    import openai

    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=600)
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(n)]
    try:
        await one(client, "Warm up", 4, eos, model)  # compile the one-row step outside the measurement
        t = time.perf_counter()
        serial = [await one(client, p, max_tokens, eos, model) for p in prompts]
        serial_wall = time.perf_counter() - t
        t = time.perf_counter()
        concurrent = await asyncio.gather(*(one(client, p, max_tokens, eos, model) for p in prompts))
        wall = time.perf_counter() - t
    finally:
        await client.close()
    differ = sum(a["text"] != b["text"] for a, b in zip(serial, concurrent) if b["text"] is not None)
    differ_cli = None if greedy is None else sum(r["text"] != greedy[p] for r, p in zip(concurrent, prompts)
                                                 if r["text"] is not None)
    errors = sorted({r["error"] for r in concurrent + serial if r.get("error")})
    return {"clients": n, "concurrent": summarize(concurrent, wall, max_tokens),
            "serial": summarize(serial, serial_wall, max_tokens), "speedup": serial_wall / wall,
            "texts_differing_from_serial": differ, "texts_differing_from_cli_greedy": differ_cli,
            "load_average_1min": os.getloadavg()[0], "failures": sum(not r["times"] for r in concurrent),
            "serial_failures": sum(not r["times"] for r in serial), "errors": errors[:3]}


def metric(url: str, name: str) -> float | None:
    import urllib.request

    try:
        text = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    except OSError:  # mlx_lm.server has no /metrics
        return None
    m = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.M)
    return float(m.group(1)) if m else None


def _or_dash(value, fmt: str = "") -> str:
    return "—" if value is None else format(value, fmt)


def cli_greedy(model: str, prompts: list[str], max_tokens: int, eos_id: int) -> dict:
    """What `xlstm-mlx generate --temp 0` prints for each prompt (the same call, in this process), EOS banned."""
    from xlstm_mlx import load
    from xlstm_mlx.generation.generate import generate

    m, tok = load(model)
    return {p: generate(m, tok, p, max_tokens, temp=0.0, logit_bias={eos_id: -100.0}) for p in prompts}


def markdown(record: dict) -> str:
    lines = [
        f"# `{'xlstm-mlx serve' if record['backend'] == 'xlstm-mlx' else 'mlx_lm.server (through our adapter)'}` under load",
        "",
        f"- date: {record['date']}",
        f"- device: {record['device']}",
        f"- model: {record['model']}",
        f"- command: `{record['command']}`",
        f"- every request: greedy, EOS banned, {record['max_tokens']} generated tokens; the server runs with "
        f"--max-batch {record['max_batch']}",
    ]
    if record.get("server_env"):
        lines.append(f"- server environment: {' '.join(f'{k}={v}' for k, v in record['server_env'].items())}")
    if record.get("mean_rows_per_decode_step"):
        lines.append(f"- mean rows per decode step over the run: {record['mean_rows_per_decode_step']:.1f}")
    if record.get("load_average"):
        la = record["load_average"]
        lines.append(f"- load average (1/5/15 min) before the run: {la['before'][0]:.1f} / {la['before'][1]:.1f} / "
                     f"{la['before'][2]:.1f}; after: {la['after'][0]:.1f} / {la['after'][1]:.1f} / {la['after'][2]:.1f}")
    if record.get("note"):
        lines.append(f"- note: {record['note']}")
    lines += [
        "",
        "| clients | concurrent tok/s | serial tok/s | speed-up | TTFT p50 / p99 (ms) | inter-token p50 / p99 (ms) "
        "| texts != serial | texts != CLI greedy | failures | load avg (1 min, after) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in record["levels"]:
        c, s = r["concurrent"], r["serial"]
        lines.append(f"| {r['clients']} | {c['tokens_per_s']:.1f} | {s['tokens_per_s']:.1f} | {r['speedup']:.2f}x "
                     f"| {c['ttft_p50_ms']:.0f} / {c['ttft_p99_ms']:.0f} | {c['itl_p50_ms']:.1f} / {c['itl_p99_ms']:.1f} "
                     f"| {r['texts_differing_from_serial']} | {_or_dash(r.get('texts_differing_from_cli_greedy'))} "
                     f"| {r['failures']} | {_or_dash(r.get('load_average_1min'), '.1f')} |")
    for r in record["levels"]:
        if r.get("errors"):
            lines.append(f"\nN={r['clients']}: failed requests said: {'; '.join(r['errors'])}")
    lines += ["", "Serial: the same requests one after another on the same server (one row decoding at a time). "
              "TTFT counts from sending the request, queueing and prefill included. Throughput counts the tokens "
              "of the requests that succeeded."]
    return "\n".join(lines) + "\n"


def plot(record: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["clients"] for r in record["levels"]]
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    ax[0].plot(n, [r["concurrent"]["tokens_per_s"] for r in record["levels"]], "o-", label="concurrent")
    ax[0].plot(n, [r["serial"]["tokens_per_s"] for r in record["levels"]], "s--", label="serial")
    ax[0].set(xscale="log", xlabel="clients", ylabel="generated tokens / s", title="throughput")
    ax[0].legend()
    ax[1].plot(n, [r["concurrent"]["ttft_p50_ms"] for r in record["levels"]], "o-", label="TTFT p50")
    ax[1].plot(n, [r["concurrent"]["itl_p50_ms"] for r in record["levels"]], "s-", label="inter-token p50")
    ax[1].set(xscale="log", yscale="log", xlabel="clients", ylabel="ms", title="latency (concurrent)")
    ax[1].legend()
    fig.suptitle(f"{record['backend']} server, {record['model']}, {record['device']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="checkpoint directory (default: the bundled demo model)")
    ap.add_argument("--backend", choices=["xlstm-mlx", "mlx-lm"], default="xlstm-mlx",
                    help="xlstm-mlx serve, or mlx_lm.server on the same checkpoint through our mlx-lm adapter")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32, 64])
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--eos-id", type=int, default=2, help="token id banned so every request runs to max-tokens")
    ap.add_argument("--json"), ap.add_argument("--md"), ap.add_argument("--plot")
    ap.add_argument("--note", help="a line recorded with the results (e.g. the machine's load)")
    ap.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                    help="environment of the server process (e.g. OPENBLAS_NUM_THREADS=1); repeat for several")
    args = ap.parse_args()
    server_env = dict(kv.split("=", 1) for kv in args.server_env)

    from xlstm_mlx.checkpoints.demo import demo_model_dir

    model = args.model or str(demo_model_dir())
    max_batch = max(args.clients)
    load_before = os.getloadavg()
    greedy = cli_greedy(model, PROMPTS, args.max_tokens, args.eos_id) if args.backend == "xlstm-mlx" else None
    log = Path(tempfile.mkdtemp()) / "server.log"
    proc, url = start_server(args.backend, model, max_batch, log, server_env)
    # mlx_lm.server loads the model a request names; ours serves one and answers 404 to any other name
    request_model = model if args.backend == "mlx-lm" else Path(model).resolve().name
    eos = {str(args.eos_id): -100}
    try:
        levels = []
        for n in args.clients:
            r = asyncio.run(run_level(url, n, args.max_tokens, eos, request_model, greedy))
            levels.append(r)
            c = r["concurrent"]
            print(f"N={n:3d}: {c['tokens_per_s']:7.1f} tok/s concurrent, {r['serial']['tokens_per_s']:6.1f} serial, "
                  f"speed-up {r['speedup']:.2f}x, TTFT p50 {c['ttft_p50_ms']:.0f} ms, ITL p50 {c['itl_p50_ms']:.1f} ms, "
                  f"{r['texts_differing_from_serial']} texts differ from serial, "
                  f"{_or_dash(r['texts_differing_from_cli_greedy'])} from the CLI's greedy text, "
                  f"{r['failures']} failures, load average {r['load_average_1min']:.1f}", flush=True)
        mean_rows = metric(url, "xlstm_mlx_decode_batch_rows_mean")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(30)
        except subprocess.TimeoutExpired:  # mlx_lm.server does not stop on SIGINT while serving
            proc.kill()
            rc = proc.wait()

    record = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores ({platform.system()})",
        "backend": args.backend,
        "model": args.model or f"bundled demo model ({demo_model_dir()})",
        "command": "python " + " ".join(sys.argv),
        "max_tokens": args.max_tokens, "max_batch": max_batch, "levels": levels,
        "mean_rows_per_decode_step": mean_rows,
        "load_average": {"before": load_before, "after": os.getloadavg()}, "server_exit_code": rc, "note": args.note, "server_env": server_env,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=1) + "\n")
    if args.md:
        Path(args.md).write_text(markdown(record))
    if args.plot:
        plot(record, args.plot)
    print(markdown(record))


if __name__ == "__main__":
    main()
