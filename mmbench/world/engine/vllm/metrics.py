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


# mmbench's name -> vLLM's gauge, read as it stands
GAUGES = {"requests_in_flight": ("vllm:num_requests_running", "vllm:num_requests_waiting")}


def vllm_counters(text: str) -> dict[str, float]:
    """The counters of COUNTERS that the text has (a counter vLLM does not export stays absent),
    and the gauges of GAUGES (summed). Read by sample (`<name>_total` for a counter), whatever family
    its TYPE line gave it."""
    wanted = {f"{family}_total": name for name, family in COUNTERS.items()}
    wanted.update({family: name for name, families in GAUGES.items() for family in families})
    out: dict[str, float] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                name = wanted.get(sample.name)
                if name is not None:
                    out[name] = out.get(name, 0.0) + float(sample.value)
    except ValueError:  # not Prometheus text
        return {}
    return out
