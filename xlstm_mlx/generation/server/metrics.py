"""Server counters, written by the engine thread (plain ints/floats) and rendered as Prometheus text.

Tokens/s is the rate over the process lifetime of decode work (generated tokens / seconds spent in decode
steps) and of prefill work; TTFT and queue wait are summaries (count, sum) with p50/p99 over the last 1024
requests.
"""

from __future__ import annotations

from collections import deque


class Summary:
    def __init__(self, window: int = 1024):
        self.count = 0
        self.sum = 0.0
        self.recent: deque[float] = deque(maxlen=window)

    def observe(self, value: float) -> None:
        self.count += 1
        self.sum += value
        self.recent.append(value)

    def quantile(self, q: float) -> float:
        values = sorted(self.recent)
        if not values:
            return 0.0
        return values[min(len(values) - 1, int(q * len(values)))]


class Metrics:
    def __init__(self):
        self.prompt_tokens = 0
        self.cached_tokens = 0
        self.prefill_tokens = 0
        self.prefill_seconds = 0.0
        self.generated_tokens = 0
        self.decode_steps = 0
        self.decode_seconds = 0.0
        self.batch_rows = 0  # sum over decode steps of the rows decoded
        self.rejected = 0
        self.finished: dict[str, int] = {}
        self.ttft = Summary()
        self.queue_wait = Summary()


def _line(out: list, name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
    out.append(f"# HELP {name} {help_}")
    out.append(f"# TYPE {name} {kind}")
    for labels, value in samples:
        out.append(f"{name}{labels} {value:.6g}" if isinstance(value, float) else f"{name}{labels} {value}")


def render(m: Metrics, health: dict, cache_stats: dict) -> str:
    out: list[str] = []
    p = "xlstm_mlx_"
    _line(out, p + "requests_active", "gauge", "Rows decoding or prefilling.", [("", health["active"])])
    _line(out, p + "requests_queued", "gauge", "Requests waiting for a row.", [("", health["queued"])])
    _line(out, p + "requests_finished_total", "counter", "Finished requests by finish reason.",
          [(f'{{reason="{k}"}}', v) for k, v in sorted(m.finished.items())] or [('{reason="stop"}', 0)])
    _line(out, p + "requests_rejected_total", "counter", "Requests refused with 429 (queue full).",
          [("", m.rejected)])
    _line(out, p + "prompt_tokens_total", "counter", "Prompt tokens of admitted requests.", [("", m.prompt_tokens)])
    _line(out, p + "cached_prompt_tokens_total", "counter", "Prompt tokens served from the prefix-state cache.",
          [("", m.cached_tokens)])
    _line(out, p + "generation_tokens_total", "counter", "Tokens sampled.", [("", m.generated_tokens)])
    _line(out, p + "decode_tokens_per_second", "gauge", "Generated tokens / seconds spent in decode steps.",
          [("", m.generated_tokens / m.decode_seconds if m.decode_seconds else 0.0)])
    _line(out, p + "prefill_tokens_per_second", "gauge", "Prefilled tokens / seconds spent prefilling.",
          [("", m.prefill_tokens / m.prefill_seconds if m.prefill_seconds else 0.0)])
    _line(out, p + "decode_steps_total", "counter", "Decode steps run.", [("", m.decode_steps)])
    _line(out, p + "decode_batch_rows_total", "counter", "Rows decoded, summed over decode steps.",
          [("", m.batch_rows)])
    _line(out, p + "decode_batch_rows_mean", "gauge", "Mean rows per decode step.",
          [("", m.batch_rows / m.decode_steps if m.decode_steps else 0.0)])
    for name, s, help_ in (("time_to_first_token_seconds", m.ttft, "Submission to first sampled token."),
                           ("queue_wait_seconds", m.queue_wait, "Submission to admission into a row.")):
        _line(out, p + name, "summary", help_,
              [('{quantile="0.5"}', s.quantile(0.5)), ('{quantile="0.99"}', s.quantile(0.99)),
               ("_sum", s.sum), ("_count", s.count)])
    _line(out, p + "state_cache_bytes", "gauge", "Bytes held by the prefix-state cache.", [("", cache_stats["bytes"])])
    _line(out, p + "state_cache_entries", "gauge", "States held by the prefix-state cache.",
          [("", cache_stats["entries"])])
    _line(out, p + "state_cache_hits_total", "counter", "Admissions that started from a stored state.",
          [("", cache_stats["hits"])])
    _line(out, p + "state_cache_misses_total", "counter", "Admissions that started from a zero state.",
          [("", cache_stats["misses"])])
    lookups = cache_stats["hits"] + cache_stats["misses"]
    _line(out, p + "state_cache_hit_rate", "gauge", "Hits / lookups.",
          [("", cache_stats["hits"] / lookups if lookups else 0.0)])
    return "\n".join(out) + "\n"
