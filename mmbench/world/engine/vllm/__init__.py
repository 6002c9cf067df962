"""A real vLLM as the engine (`--engine vllm`): its environment (env), the model it serves (model),
the server started, measured and stopped (server), its /metrics (metrics), and the files that run
inside vLLM's own interpreter (site/: never imported by mmbench)."""
