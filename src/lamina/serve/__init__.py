"""Serving: an OpenAI-compatible HTTP API over registry references.

engine.py   continuous batching at decode-step granularity over one model (adapters mixed per row)
lora_stack.py  LoRA adapters of one base stacked per layer, mixed per row at the cost of one
decode_attention.py  one-query attention over grouped KV heads without repeating the cache
servable.py what a registry version is when served: verified directory, base, hashes
pool.py     loaded models: one per base, adapters attached by name, refcounts, freeing
router.py   reference -> served version(s); the switch point for hot swap (and traffic splits)
watch.py    polls aliases, loads a moved alias beside the old version, switches, frees
keys.py     API keys (hash only), identities, allow-lists, rate and token budgets
guard.py    output guard: PII masking/blocking and training canaries, streaming with holdback
metrics.py  Prometheus metrics
reqlog.py   the JSONL request log (no content unless asked, then PII-masked)
api.py      OpenAI request shapes and errors
job.py      one request in flight: tokens -> text, stop strings, guard, per choice
app.py      the FastAPI application (routes, errors)
server.py   assembling the parts and running uvicorn
"""
