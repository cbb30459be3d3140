"""`xlstm-mlx serve`: an OpenAI-compatible HTTP server (docs/server.md).

    app.py          FastAPI routes: /v1/models, /v1/completions, /v1/chat/completions, /health, /metrics
    protocol.py     pydantic request models -> a validated Job (plain Python values only)
    engine.py       the one engine thread: owns the model, a batched cache of rows, continuous batching
    rows.py         batch-first cache surgery: join rows, drop rows, take one row out
    textstream.py   per-row text: detokenizer + stop strings, the same rules as generate.stream_generate
    state_cache.py  LRU prefix-state cache bounded in bytes
    metrics.py      counters and the Prometheus text
    cli.py          the `serve` subcommand

Threads: MLX arrays built on one thread cannot be evaluated on another, so every MLX call (loading included)
happens on the engine thread; the asyncio side passes it plain Python values and gets plain values back.
"""
