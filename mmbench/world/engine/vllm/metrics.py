"""vLLM's GET /metrics (Prometheus text), read with prometheus_client's parser: the counters mmbench
records, summed over their labels (one series per engine core, finished reason, ...)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

# mmbench's name -> vLLM's counter (prometheus_client names a counter's family without `_total`)
COUNTERS = {
    "mm_cache_queries": "vllm:mm_cache_queries",
    "mm_cache_hits": "vllm:mm_cache_hits",
    "requests_finished": "vllm:request_success",
    "prompt_tokens": "vllm:prompt_tokens",
    "generation_tokens": "vllm:generation_tokens",
    "preemptions": "vllm:num_preemptions",
}


def vllm_counters(text: str) -> dict[str, float]:
    """The counters of COUNTERS that the text has (a counter vLLM does not export stays absent)."""
    wanted = {family: name for name, family in COUNTERS.items()}
    out: dict[str, float] = {}
    try:
        for family in text_string_to_metric_families(text):
            name = wanted.get(family.name)
            if name is None:
                continue
            values = [s.value for s in family.samples if s.name.endswith("_total")]
            out[name] = float(sum(values))
    except ValueError:  # not Prometheus text
        return {}
    return out
