"""Prometheus metrics of one server, on a registry of their own (so tests can run several
servers in one process). Per-request series carry the version that answered (`name/N`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("lamina_requests", "Completed requests.", ["version", "endpoint", "status"], registry=r)
        self.errors = Counter("lamina_errors", "Error responses by status.", ["status", "code"], registry=r)
        self.latency = Histogram("lamina_request_seconds", "Request latency.", ["version"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("lamina_time_to_first_token_seconds", "Time to first token.", ["version"],
                              buckets=LATENCY_BUCKETS, registry=r)
        self.prompt_tokens = Counter("lamina_prompt_tokens", "Prompt tokens.", ["version"], registry=r)
        self.output_tokens = Counter("lamina_output_tokens", "Output tokens.", ["version"], registry=r)
        self.tokens_per_s = Gauge("lamina_output_tokens_per_second", "Output tokens/s of the last decode step "
                                  "(batch size / step time).", registry=r)
        self.queue = Gauge("lamina_queue_depth", "Sequences waiting to join a batch.", registry=r)
        self.running = Gauge("lamina_running_sequences", "Sequences in the running batch.", registry=r)
        self.batch = Histogram("lamina_batch_size", "Rows per decode step.", buckets=BATCH_BUCKETS, registry=r)
        self.kv_used = Gauge("lamina_kv_cache_positions_used", "KV cache positions holding real tokens.", registry=r)
        self.kv_held = Gauge("lamina_kv_cache_positions_held", "KV cache positions allocated (with padding).",
                             registry=r)
        self.swaps = Counter("lamina_swaps", "Alias moves handled.", ["ref", "outcome"], registry=r)
        self.swap_seconds = Histogram("lamina_swap_seconds", "Verify + load + switch time of a swap.", ["ref"],
                                      buckets=LATENCY_BUCKETS, registry=r)
        self.serving = Gauge("lamina_serving_version", "1 for the version each reference serves.",
                             ["ref", "version"], registry=r)
        self.refused = Gauge("lamina_refused_version", "1 while a reference's alias points at a version that "
                             "failed its checks or load.", ["ref", "version"], registry=r)
        self.unauthorized = Counter("lamina_unauthorized", "Refused API keys.", ["reason"], registry=r)
        self.guard_trips = Counter("lamina_guard_trips", "Output guard trips.", ["version", "kind", "action"],
                                   registry=r)
        self.inflight = Gauge("lamina_inflight_requests", "Requests being answered.", ["version"], registry=r)
        # Staged rollouts (lamina rollout): the split this server follows, what its guards did,
        # operators' ratings and shadow copies, per version.
        self.rollout_share = Gauge("lamina_rollout_share_percent", "Share of callers a rollout sends to its "
                                   "challenger (shadow: copies); 0 once it ends.", ["ref", "challenger", "mode"],
                                   registry=r)
        self.rollout_actions = Counter("lamina_rollout_actions", "Automatic actions of this server's rollout "
                                       "guards (e.g. rollback).", ["ref", "action"], registry=r)
        self.feedback = Histogram("lamina_feedback_rating", "Ratings received through POST /v1/feedback.",
                                  ["version"], buckets=(-1, 0, 0.25, 0.5, 0.75, 1, 2, 3, 4, 5), registry=r)
        self.shadow_copies = Counter("lamina_shadow_copies", "Copies a shadow challenger answered.",
                                     ["challenger", "outcome"], registry=r)
        self.prompt_drift = Gauge("lamina_prompt_drift", "KS distance of this server's prompt lengths over the "
                                  "last rollout window from the version's eval set (0 = alike, 1 = apart).",
                                  ["version"], registry=r)

    def on_step(self, step: dict) -> None:
        self.batch.observe(step["batch"])
        if step["seconds"] > 0:
            self.tokens_per_s.set(step["batch"] / step["seconds"])

    def sample_engines(self, loads: list[dict]) -> None:
        self.queue.set(sum(x["waiting"] for x in loads))
        self.running.set(sum(x["running"] for x in loads))
        self.kv_used.set(sum(x["kv_used"] for x in loads))
        self.kv_held.set(sum(x["kv_held"] for x in loads))

    def sample_drift(self, by_version: dict[str, float]) -> None:
        for labels in list(self.prompt_drift._metrics):  # a version with no recent prompts has no value
            if labels[0] not in by_version:
                self.prompt_drift.remove(*labels)
        for version, value in by_version.items():
            self.prompt_drift.labels(version).set(value)

    def render(self) -> bytes:
        return generate_latest(self.registry)
