"""`xlstm-mlx serve`: flags, then the engine on the main thread and uvicorn on a second thread (docs/server.md).

The main thread loads the model and runs the engine loop (all MLX work); uvicorn serves HTTP on its own thread
and event loop. Shutdown: SIGINT/SIGTERM (handled on the main thread) make uvicorn stop accepting and let open
requests drain for --shutdown-timeout seconds; once the HTTP thread has ended and been joined, the engine loop
cancels whatever is left and returns. A second signal forces uvicorn out at once.
"""

from __future__ import annotations

import signal
import socket
import sys
import threading
from pathlib import Path

from xlstm_mlx.errors import UsageError


def add_arguments(p) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks a free one)")
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on /v1/* routes")
    p.add_argument("--model-id", help="model name reported by /v1/models (default: the checkpoint directory's name)")
    p.add_argument("--max-batch", type=int, default=8, help="rows decoded together (default 8)")
    p.add_argument("--max-queue", type=int, default=64,
                   help="requests that may wait for a row; beyond it 429 + Retry-After (default 64)")
    p.add_argument("--state-cache-bytes", type=int, default=1 << 30,
                   help="bytes of recurrent states kept for prefix reuse; 0 disables it (default 1 GiB)")
    p.add_argument("--state-save-every", type=int, default=512,
                   help="also store the state every N prompt tokens of long prompts (default 512; 0 = never)")
    p.add_argument("--prefill-chunk", type=int, default=256,
                   help="prompt positions prefilled per engine step, between decode steps (default 256)")
    p.add_argument("--max-prompt-tokens", type=int, default=8192, help="longest prompt accepted (default 8192)")
    p.add_argument("--max-tokens-cap", type=int, default=4096, help="largest max_tokens accepted (default 4096)")
    p.add_argument("--default-max-tokens", type=int, default=256,
                   help="max_tokens when a request gives none (default 256)")
    p.add_argument("--max-request-bytes", type=int, default=1 << 20, help="largest request body (default 1 MiB)")
    p.add_argument("--shutdown-timeout", type=float, default=3.0,
                   help="seconds open requests may go on after SIGINT/SIGTERM before they are cut (default 3)")


def _check(args) -> None:
    for name, minimum in (("max_batch", 1), ("max_queue", 0), ("state_cache_bytes", 0), ("state_save_every", 0),
                          ("prefill_chunk", 1), ("max_prompt_tokens", 1), ("max_tokens_cap", 1),
                          ("default_max_tokens", 1), ("max_request_bytes", 64)):
        if getattr(args, name) < minimum:
            raise UsageError(f"--{name.replace('_', '-')} must be >= {minimum}, got {getattr(args, name)}")
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be in 0..65535, got {args.port}")
    if args.default_max_tokens > args.max_tokens_cap:
        raise UsageError(f"--default-max-tokens {args.default_max_tokens} is above --max-tokens-cap "
                         f"{args.max_tokens_cap}")
    if args.shutdown_timeout < 0:
        raise UsageError(f"--shutdown-timeout must be >= 0, got {args.shutdown_timeout}")


def _listen(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise UsageError(f"cannot resolve --host {host!r}: {e}") from e
    family = infos[0][0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(infos[0][4])
    except OSError as e:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {e.strerror or e} (is another server running there? "
                         "pick another --port)") from e
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def run(args, model_dir: Path) -> int:
    import uvicorn

    from xlstm_mlx.generation.server.app import Settings, create_app
    from xlstm_mlx.generation.server.engine import Engine
    from xlstm_mlx.generation.server.protocol import Limits

    _check(args)
    sock = _listen(args.host, args.port)  # before loading: a busy port fails fast
    engine = Engine(model_dir, dtype=args.dtype, profile=args.profile, max_batch=args.max_batch,
                    max_queue=args.max_queue, state_cache_bytes=args.state_cache_bytes,
                    prefill_chunk=args.prefill_chunk, save_every=args.state_save_every, verbose=args.verbose)
    try:
        engine.load()  # on this (the main) thread: it is the engine thread from now on
        settings = Settings(model_id=args.model_id or Path(model_dir).resolve().name, api_key=args.api_key,
                            limits=Limits(args.max_prompt_tokens, args.max_tokens_cap, args.default_max_tokens),
                            max_request_bytes=args.max_request_bytes, drain_s=args.shutdown_timeout)
        config = uvicorn.Config(create_app(engine, settings), log_level="info" if args.verbose else "warning",
                                lifespan="off", timeout_graceful_shutdown=args.shutdown_timeout + 2,
                                access_log=args.verbose)
        server = uvicorn.Server(config)  # off the main thread uvicorn installs no signal handlers: we do
        failure: list[BaseException] = []

        def serve():
            try:
                server.run(sockets=[sock])
            except BaseException as e:  # reported on the main thread
                failure.append(e)

        def on_signal(sig, frame):
            settings.draining.set()
            server.handle_exit(sig, frame)  # the first stops accepting and drains; a second forces the exit

        old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        web = threading.Thread(target=serve, name="xlstm-mlx-http")
        try:
            web.start()
            host, port = sock.getsockname()[:2]
            print(f"[xlstm-mlx serve] model {settings.model_id!r} on http://{host}:{port}/v1 "
                  f"(max batch {args.max_batch}, max queue {args.max_queue}"
                  f"{', API key required' if args.api_key else ''}); Ctrl-C stops", file=sys.stderr, flush=True)
            engine.run(should_stop=lambda: not web.is_alive())
        finally:
            server.should_exit = True
            web.join()
            for sig, handler in old.items():
                signal.signal(sig, handler)
        if failure:
            raise failure[0]
    finally:
        sock.close()
    print("[xlstm-mlx serve] stopped", file=sys.stderr, flush=True)
    return 0
