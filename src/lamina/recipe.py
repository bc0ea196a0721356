"""The recipe: a YAML file validated by the pydantic models below.

This module is the only place defaults live. Unknown keys and wrong types fail before
anything runs, with the key's dotted path (`train.lr: ...`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lamina.errors import LaminaError


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSpec(Strict):
    base: str = Field("tiny", description="A local Hugging Face directory, a hub id, or `tiny` (embedded).")
    allow_pickle: bool = False
    revision: str | None = None
    chat_template: str | None = Field(
        None, description="A Jinja chat-template file, for a base whose tokenizer has none (relative: to the recipe)."
    )


# The shapes training data may have, and the record fields a `data.columns` mapping may fill in
# each (plus `system`, `subject_id` and `id` in all); data/shapes.py reads them.
SHAPE_FIELDS: dict[str, set[str]] = {
    "chat": {"messages"}, "prompt_completion": {"prompt", "completion"},
    "preference": {"prompt", "chosen", "rejected"}, "sharegpt": {"conversations"},
    "alpaca": {"instruction", "input", "output"}, "unpaired": {"prompt", "completion", "label"},
}  # fmt: skip
COMMON_FIELDS = {"system", "subject_id", "id"}


def column_errors(fmt: str, columns: dict[str, str] | None) -> str | None:
    """Why a `data.columns` mapping does not fit format `fmt`, or None."""
    allowed = SHAPE_FIELDS.get(fmt, set()) | COMMON_FIELDS
    for key in columns or {}:
        if key not in allowed:
            return f"{key!r} is not a field of format {fmt!r} (one of {', '.join(sorted(allowed))})"
    return None


class DataSpec(Strict):
    train: str | None = Field(
        None, description="Training records (taken in before training): a JSONL, JSON (array), Parquet, CSV or TSV "
        "file, a `datasets` save_to_disk directory, or `hub:owner/name` (loaded through `datasets`).",
    )
    dataset: str | None = Field(None, description="A dataset version id (or its name) from `lamina data intake`.")
    licence: str | None = Field(None, description="Licence of the raw `train`/`eval` files; required for them.")
    eval: str | None = Field(None, description="Held-out records, in any form `train` takes (same format).")
    format: Literal["chat", "prompt_completion", "preference", "unpaired", "sharegpt", "alpaca"] = Field(
        "chat", description="chat: `messages`; prompt_completion; preference: prompt/chosen/rejected; unpaired: "
        "{prompt, completion, label: true|false} (for kto); sharegpt: `conversations` of {from, value}; alpaca: "
        "instruction/input/output. A `system` column is honoured; other columns are kept as metadata.",
    )
    columns: dict[str, str] | None = Field(
        None, description="Record field -> your column, when the names differ: {prompt: question, completion: answer}."
    )
    split: str | None = Field(None, description="Split of a hub dataset or `datasets` directory; default train.")
    revision: str | None = Field(None, description="Branch, tag or commit of a hub dataset; the resolved commit "
                                 "is recorded as provenance.")
    loss_on: Literal["assistant", "all"] = "assistant"
    max_length: int = Field(512, gt=8)
    overlong: Literal["truncate", "drop"] = "drop"

    @model_validator(mode="after")
    def _one_source(self) -> DataSpec:
        if (self.train is None) == (self.dataset is None):
            raise ValueError("name exactly one of `train` (a JSONL file) or `dataset` (a dataset version)")
        if self.dataset is not None and (self.eval is not None or self.licence is not None):
            raise ValueError("`eval` and `licence` describe raw files; a dataset version has its own eval split and licences")
        problem = column_errors(self.format, self.columns)
        if problem:
            raise ValueError(f"columns: {problem}")
        return self


class FullSpec(Strict):
    name: Literal["full"] = "full"


class LoraSpec(Strict):
    name: Literal["lora"] = "lora"
    r: int = Field(16, gt=0)
    alpha: float = Field(32.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"


class QloraSpec(Strict):
    name: Literal["qlora"] = "qlora"
    r: int = Field(16, gt=0)
    alpha: float = Field(32.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type of the frozen base.")
    double_quant: bool = Field(True, description="Quantise the quantisation constants too (~0.4 bit/param saved).")
    compute_dtype: Literal["bf16", "fp32"] = Field("bf16", description="Dtype the 4-bit weights are expanded to.")
    optimizer: Literal["adamw", "paged_adamw_8bit"] = Field(
        "adamw", description="paged_adamw_8bit: bitsandbytes' 8-bit AdamW with paged state (memory spikes spill)."
    )


class BottleneckSpec(Strict):
    name: Literal["bottleneck"] = "bottleneck"
    style: Literal["pfeiffer", "houlsby"] = Field(
        "pfeiffer", description="pfeiffer: one adapter after each MLP; houlsby: after attention and after the MLP."
    )
    size: int = Field(32, gt=0, description="Bottleneck width (down-projection output).")
    activation: Literal["relu", "gelu", "silu", "tanh"] = "relu"
    init_std: float = Field(0.01, gt=0, description="Std of the down-projection init; the up-projection starts at 0.")


class Ia3Spec(Strict):
    name: Literal["ia3"] = "ia3"
    target_modules: list[str] | None = Field(None, description="Modules whose activations are rescaled; None: PEFT's "
                                             "default for the architecture (k_proj, v_proj, down_proj for Llama).")
    feedforward_modules: list[str] | None = Field(
        None, description="Subset of target_modules scaled on their input (feed-forward); None: PEFT's default."
    )


class PromptSpec(Strict):
    name: Literal["prompt"] = "prompt"
    num_virtual_tokens: int = Field(16, gt=0)
    init_text: str | None = Field(None, description="Initialise the virtual tokens from this text's embeddings.")


class PrefixSpec(Strict):
    name: Literal["prefix"] = "prefix"
    num_virtual_tokens: int = Field(16, gt=0)
    projection: bool = Field(False, description="Reparametrise the prefix through a two-layer MLP while training.")
    projection_hidden: int | None = Field(None, gt=0, description="MLP width; None: the model's hidden size.")


class BitfitSpec(Strict):
    name: Literal["bitfit"] = "bitfit"
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="Linear layers (name suffixes) inside the decoder layers that get trainable biases."
    )


MethodSpec = Annotated[
    FullSpec | LoraSpec | QloraSpec | BottleneckSpec | Ia3Spec | PromptSpec | PrefixSpec | BitfitSpec,
    Field(discriminator="name"),
]


class TrainSpec(Strict):
    objective: Literal["sft", "lm", "dpo", "reward", "kto", "orpo", "simpo", "grpo", "rloo"] = Field(
        "sft", description="`sft`: loss on labelled (assistant) tokens; `lm`: plain language modelling; "
        "`dpo`: direct preference optimisation; `reward`: a Bradley-Terry reward model (preference data); "
        "`kto`: unpaired desirable/undesirable replies (`unpaired` data); `orpo`, `simpo`: reference-free "
        "preference losses; `grpo`, `rloo`: online RL on sampled replies (settings in `grpo`).",
    )
    tokens_per_step: int = Field(4096, gt=0, description="Token budget of one optimiser step.")
    micro_tokens: int | None = Field(
        None,
        gt=0,
        description="Token budget of one forward/backward. Unset: the whole step on CPU; on CUDA, "
        "sized so saved activations fit `activation_budget_gib`.",
    )
    activation_budget_gib: float | None = Field(
        None, gt=0, description="GPU memory for saved activations when micro_tokens is unset; "
        "default: 40% of the device's memory."
    )
    steps: int | None = Field(None, gt=0, description="Optimiser steps; defaults to `epochs` over the data.")
    epochs: float = Field(1.0, gt=0)
    max_seconds: float | None = Field(None, gt=0, description="Stop after this much wall time.")
    optimizer: Literal["adamw"] = "adamw"
    lr: float = Field(2e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_steps: int = Field(0, ge=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    grad_clip: float | None = Field(1.0, gt=0)
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto: bf16 on CUDA and on CPUs with bf16 in hardware (AVX512-BF16, AMX; "
        "autocast over fp32 weights), else fp32.",
    )
    gradient_checkpointing: bool = False
    fused_kernels: Literal["auto", "on", "off"] = Field(
        "auto", description="Fused RMSNorm/RoPE/SwiGLU kernels (liger-kernel) on CUDA; auto: when installed."
    )
    checkpoint_every: int = Field(0, ge=0, description="Steps between resumable checkpoints; 0 = only at the end.")
    log_every: int = Field(10, gt=0)

    @model_validator(mode="after")
    def _micro_fits(self) -> TrainSpec:
        if self.micro_tokens is not None and self.micro_tokens > self.tokens_per_step:
            raise ValueError("micro_tokens must not exceed tokens_per_step")
        return self


class DistributedSpec(Strict):
    strategy: Literal["auto", "ddp", "fsdp"] = Field(
        "auto", description="Under torchrun: `ddp` replicates the model and all-reduces gradients; `fsdp` "
        "shards parameters, gradients and optimiser state per decoder layer (FSDP2); `auto` picks DDP "
        "when the trainable state fits each device, FSDP2 when it does not.",
    )
    reshard_after_forward: bool = Field(
        True, description="FSDP2: free the gathered parameters after each layer's forward (less memory, "
        "one more all-gather in the backward)."
    )
    cpu_offload: bool = Field(False, description="FSDP2: keep sharded parameters and optimiser state in CPU memory.")
    timeout_s: float = Field(
        600.0, gt=0, description="A collective that waits longer than this fails the job instead of hanging."
    )


class CustomRecognizerSpec(Strict):
    entity: str = Field(..., pattern=r"^[A-Z][A-Z0-9_]*$")
    regex: str
    score: float = Field(0.6, gt=0, le=1)

    @field_validator("regex")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as e:
            raise ValueError(f"not a valid regular expression: {e}") from None
        return v


PII_ENTITIES = ["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "IP_ADDRESS", "URL"]
PII_ENTITIES += ["ADDRESS", "PERSON", "LOCATION"]


class PiiSpec(Strict):
    enabled: bool = True
    entities: list[str] = Field(
        default_factory=lambda: list(PII_ENTITIES),
        description="Entity types to find; PERSON/LOCATION need a spaCy NER model. Drop e.g. US_SSN to turn a "
        "country's recognizer off.",
    )
    ner: Literal["auto", "off", "required"] = Field("auto", description="auto: use the spaCy model if installed.")
    ner_model: str = Field("en_core_web_sm", description="An installed spaCy package name, or a model directory.")
    score_threshold: float = Field(0.35, ge=0, le=1)
    operator: Literal["placeholder", "mask", "hmac"] = Field(
        "placeholder", description="placeholder: <EMAIL_ADDRESS>; mask: ****; hmac: keyed pseudonym per workspace."
    )
    phone_regions: list[str] = Field(default_factory=lambda: ["US", "GB", "DE"])
    custom: list[CustomRecognizerSpec] = Field(default_factory=list)
    allow: list[str] = Field(default_factory=list, description="Values never masked.")
    deny: dict[str, list[str]] = Field(default_factory=dict, description="entity -> values always masked.")
    prefilter: bool = Field(True, description="Skip recognizers whose cheap character test cannot match.")


class IntakeSpec(Strict):
    pii: PiiSpec = PiiSpec()
    unicode_form: Literal["NFC", "NFKC"] = "NFKC"
    dedup_threshold: float = Field(
        0.8, gt=0, le=1, description="MinHash Jaccard above which records are near-duplicates; 1.0 = exact only."
    )
    dedup_num_perm: int = Field(64, ge=16, le=512)
    dedup_shingle: int = Field(3, ge=1, description="Word n-gram size for near-duplicate shingles (short records: small n).")
    contamination_ngram: int = Field(8, ge=3, description="Word n-gram size for the eval-overlap check.")
    contamination_threshold: float = Field(
        0.5, gt=0, le=1, description="Share of a record's n-grams found in eval sets that marks it contaminated."
    )
    contamination_eval: list[str] = Field(default_factory=list, description="Extra eval JSONL files to check.")
    remove_contaminated: bool = True
    eval_ratio: float = Field(
        0.1, ge=0, lt=1, description="Share of records the hash split sends to eval (0 if `data.eval` names a file)."
    )
    licences: list[str] = Field(
        default_factory=lambda: ["apache-2.0", "mit", "bsd-3-clause", "cc0-1.0", "cc-by-4.0", "internal"],
        description="Licences this recipe accepts; a source outside the list stops training.",
    )
    min_train_records: int = Field(
        1, ge=1, description="Fewest training records intake may leave (after dedup, split and contamination); "
        "fewer stops before anything is written."
    )
    workers: int = Field(0, ge=0, description="PII worker processes; 0 = one per core (in-process for small jobs).")
    batch: int = Field(64, gt=0, description="Records per worker task.")


class TrackingSpec(Strict):
    report_to: list[Literal["mlflow", "tensorboard", "wandb"]] = Field(
        default_factory=lambda: ["mlflow"],
        description="Where curves and metrics go while training; MLflow always (the registry and lineage live "
        "there), TensorBoard into RUN/tensorboard, Weights & Biases into RUN/wandb.",
    )
    wandb_project: str = Field("lamina", description="Weights & Biases project.")
    wandb_mode: Literal["offline", "online"] = Field(
        "offline", description="offline: written under the run directory, no network (`wandb sync` uploads it); "
        "online: sent as it trains (needs `wandb login`).",
    )

    @field_validator("report_to")
    @classmethod
    def _mlflow_kept(cls, v: list[str]) -> list[str]:
        if "mlflow" not in v:
            raise ValueError("must include mlflow: the registry, lineage and withdrawal read runs from it")
        return list(dict.fromkeys(v))


class OutputSpec(Strict):
    dir: str | None = Field(None, description="Run directory; default: <workspace>/runs/<name>-<time>.")


# --- Workspace governance (policy.yaml) and registry settings; not part of a training recipe.

DEFAULT_ROLES: dict[str, list[str]] = {
    "viewer": ["read"],
    "data-steward": ["read", "data.write", "data.forget"],
    "trainer": ["read", "train", "register"],
    "approver": ["read", "promote.staging", "promote.production"],
    "deployer": ["read", "promote.staging", "rollback", "serve", "incident"],
    "admin": ["*"],
    "consumer": ["call"],  # an API key's identity: may call the served models, nothing else
}


class ServeSpec(Strict):
    """`lamina serve` settings (flags override them)."""

    host: str = Field("127.0.0.1", description="Loopback by default; widen it behind a TLS reverse proxy.")
    port: int = Field(8000, ge=0, le=65535)
    poll_s: float = Field(1.0, gt=0, description="How often the served aliases are read for moves.")
    max_batch: int = Field(64, gt=0, description="Sequences decoded together per model.")
    default_max_tokens: int = Field(256, gt=0, description="max_tokens when a request gives none.")
    max_tokens: int = Field(4096, gt=0, description="Largest max_tokens a request may ask for (else 413).")
    max_body_bytes: int = Field(1 << 20, gt=0, description="Largest request body (else 413).")
    max_n: int = Field(8, gt=0, description="Largest `n` (choices per request).")
    auth: bool = Field(True, description="Require an API key (`lamina keys issue`); off only on loopback.")
    guard: Literal["mask", "block", "off"] = Field(
        "mask", description="PII in outputs: mask it, or end the response (finish_reason content_filter)."
    )
    holdback_chars: int = Field(
        64, ge=0, description="Streamed text held back so a PII span or stop string across chunks is caught."
    )
    log_content: bool = Field(False, description="Write prompts and outputs (PII-masked) to the request log.")
class DisclosureTrigger(Strict):
    """Who must be told by when, once an incident carries `signal` above `above`."""

    signal: Literal[
        "pii_in_outputs", "safety_regression", "withdrawal_reached_served", "guard_breach", "tampered_artifact"
    ]
    notify: list[str] = Field(..., min_length=1, description="Contacts (people, regulators, customers) to tell.")
    within_hours: float = Field(72.0, gt=0, description="Deadline, counted from the incident's opening.")
    above: float = Field(0.0, ge=0, description="Fires when the incident's value of the signal exceeds this.")


class IncidentPolicySpec(Strict):
    """Per model (or `*` for any model): who owns its incidents and who must hear of them."""

    owner: str
    escalation: list[str] = Field(default_factory=list, description="Contacts told of high-severity incidents.")
    disclosure: list[DisclosureTrigger] = Field(default_factory=list)


class PolicySpec(Strict):
    roles: dict[str, list[str]] = Field(default_factory=lambda: {k: list(v) for k, v in DEFAULT_ROLES.items()})
    users: dict[str, list[str]] = Field(default_factory=dict, description="identity -> role names")
    four_eyes: list[str] = Field(
        default_factory=lambda: ["production"],
        description="Aliases whose approver must not be the person who trained the version.",
    )
    incidents: dict[str, IncidentPolicySpec] = Field(
        default_factory=dict, description="model name or `*` -> owner, escalation contacts, disclosure triggers"
    )


class RolloutSpec(Strict):
    """Guards a challenger must keep while it takes live traffic (`lamina rollout`)."""

    guards: list[str] = Field(
        default_factory=lambda: [
            "live.error_rate <= champion + 0.02",
            "live.latency_p95_s <= champion * 2 + 0.25",
            "live.guard_trip_rate <= champion + 0.05",
            "live.refusal_rate <= champion + 0.1",
        ],
        description='Same language as eval gates over `live.*` metrics, e.g. "live.error_rate <= champion + 0.02".',
    )
    monitor_guards: list[str] = Field(
        default_factory=lambda: ["live.error_rate <= 0.05", "live.pii_rate <= 0.01", "live.latency_p95_s <= 30"],
        description="Absolute guards `lamina monitor check` holds a served version to outside a rollout.",
    )
    window_s: float = Field(60.0, gt=0, description="Guards judge the requests of the last window_s seconds.")
    min_requests: int = Field(20, gt=0, description="Requests a version needs in the window before it is judged.")
    webhook: str | None = Field(None, description="URL sent a JSON notice (POST) when a rollout is rolled back.")


class RegistrySpec(Strict):
    experiment: str = "lamina"
    aliases: list[str] = Field(default_factory=lambda: ["staging", "production"])
    intended_use: str = "The task it was fine-tuned and evaluated on, by the team that registered it."
    out_of_scope: str = "Any use its evaluation did not cover; decisions about people without human review."
    limitations: str = "Measured only on the evaluation suites listed; small models make confident mistakes."


SuiteName = Literal["task", "safety", "privacy", "efficiency", "judge"]


class JudgeSpec(Strict):
    url: str = Field(..., description="Base URL of an OpenAI-compatible API, e.g. http://127.0.0.1:8000/v1.")
    model: str = Field(..., description="Model name sent to the judge endpoint.")
    api_key_env: str | None = Field(None, description="Environment variable holding the API key, if any.")
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(2, ge=0, description="Retries of a failed call (connection, 429, 5xx), with back-off.")
    max_items: int = Field(50, gt=0, description="Prompts judged pairwise (each in both orders).")
    score_safety: bool = Field(False, description="Let the judge, not the rule-based detector, decide refusals.")


class EvalSpec(Strict):
    suites: list[SuiteName] = Field(default_factory=lambda: ["task", "safety", "privacy", "efficiency"])
    gates: list[str] = Field(default_factory=list, description='e.g. "safety.unsafe_rate <= baseline + 0.02".')
    eval_file: str | None = Field(None, description="Held-out JSONL for the task suite; default: data.eval.")
    max_items: int = Field(100, gt=0, description="Task items evaluated (first N of the held-out file).")
    max_new_tokens: int = Field(48, gt=0)
    batch_size: int = Field(16, gt=0)
    mc_choices: int = Field(4, ge=2, description="Choices per multiple-choice item (distractors drawn from other items).")
    safety_per_category: int = Field(20, gt=0)
    safety_seed: int = 0
    canaries: str | None = Field(None, description="JSONL of inserted canaries {prefix, secret[, prompt]}.")
    canary_candidates: int = Field(1023, gt=0, description="Random candidates R; exposure is at most log2(R+1) bits.")
    mia_records: int = Field(100, gt=1, description="Training and held-out records each, for membership inference.")
    efficiency_prompts: int = Field(16, gt=0, description="Prompts timed one at a time for latency.")
    champion: str | None = Field(None, description="Registry reference of the champion; default <name>@production.")
    judge: JudgeSpec | None = None


class DpoSpec(Strict):
    beta: float = Field(0.1, gt=0, description="Strength of the pull towards the reference.")
    loss: Literal["sigmoid", "ipo", "hinge"] = "sigmoid"
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="Assumed share of flipped preference labels.")
    precompute_reference: bool = Field(
        False, description="Compute the reference log-probs once before training and store them with the run."
    )


class SamplingSpec(Strict):
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(32, gt=0)


class PpoSpec(Strict):
    reward: str | None = Field(
        None, description="`module:function` scoring (prompts, responses) -> floats; default: the reward stage."
    )
    reward_model: str | None = Field(None, description="A reward-model run directory (objective `reward`).")
    iterations: int = Field(20, gt=0, description="Rollout batches.")
    rollouts: int = Field(32, gt=0, description="Prompts sampled per iteration.")
    epochs: int = Field(4, gt=0, description="Optimisation passes over each rollout batch.")
    mini_batch: int = Field(8, gt=0, description="Rollouts per optimiser step.")
    lr: float = Field(1e-4, gt=0)
    value_lr: float | None = Field(None, gt=0, description="Value-head learning rate; default: lr x 10.")
    gamma: float = Field(1.0, gt=0, le=1)
    lam: float = Field(0.95, ge=0, le=1)
    clip: float = Field(0.2, gt=0, description="Policy ratio clip range.")
    value_clip: float = Field(0.2, gt=0)
    value_coef: float = Field(0.5, ge=0)
    init_kl_coef: float = Field(0.05, ge=0)
    adaptive_kl: bool = True
    target_kl: float = Field(6.0, gt=0, description="Per-sequence KL the adaptive controller steers to.")
    kl_horizon: int = Field(10000, gt=0)
    whiten_advantages: bool = True
    grad_clip: float | None = Field(1.0, gt=0)
    sampling: SamplingSpec = SamplingSpec()
    max_seconds: float | None = Field(None, gt=0)


class KtoSpec(Strict):
    beta: float = Field(0.1, gt=0, description="Scale of the reward log π/π_ref inside the sigmoid.")
    desirable_weight: float = Field(
        1.0, gt=0, description="λ_D; raise it when desirable records are fewer than undesirable ones."
    )
    undesirable_weight: float = Field(1.0, gt=0, description="λ_U, the weight of undesirable records.")


class OrpoSpec(Strict):
    beta: float = Field(
        0.1, gt=0, description="λ: weight of the odds-ratio term beside the chosen reply's SFT loss."
    )


class SimpoSpec(Strict):
    beta: float = Field(2.0, gt=0, description="Scale of the length-normalised log-prob reward.")
    gamma: float = Field(1.0, ge=0, description="Target reward margin γ between chosen and rejected.")


class GrpoSpec(Strict):
    """Online RL with group baselines; `train:` gives the optimiser settings (lr, schedule,
    grad_clip, micro_tokens, precision), as for every objective of the loop."""

    reward: str | None = Field(
        None, description="`module:function` scoring (prompts, responses[, references]) -> floats, e.g. a "
        "verifier from lamina.train.verifiers."
    )
    reward_model: str | None = Field(None, description="A reward-model run directory (objective `reward`).")
    iterations: int = Field(20, gt=0, description="Rollout batches.")
    prompts: int = Field(8, gt=0, description="Prompts sampled per iteration.")
    group_size: int = Field(8, ge=2, description="Replies sampled per prompt (G).")
    epochs: int = Field(1, gt=0, description="Optimisation passes over each rollout batch.")
    mini_batch: int | None = Field(
        None, gt=0, description="Replies per optimiser step; default: the whole rollout batch (one step per epoch)."
    )
    clip: float = Field(0.2, gt=0, description="Ratio clip ε: the ratio is held within [1-ε, 1+ε_high].")
    clip_high: float | None = Field(None, gt=0, description="ε_high (DAPO's asymmetric clip); default: clip.")
    kl_coef: float = Field(
        0.04, ge=0, description="β of the k3 estimate of KL(π‖π_ref) per token; 0 drops the reference forward. "
        "On by default: a GRPO stage usually follows SFT/safety stages whose behaviour the gates check, and a "
        "verifier scores only the task, so the pull to the reference keeps the rest; with an adapter the "
        "reference is the same weights with the adapter off (one no-grad forward, no memory)."
    )
    scale_rewards: Literal["group", "batch", "none"] | None = Field(
        None, description="Divide advantages by the std of the group, of the batch, or not at all; "
        "default: group for grpo, none for rloo."
    )
    loss_norm: Literal["token", "sequence"] = Field(
        "token", description="token: every completion token of a step weighs the same (no length bias); "
        "sequence: each reply's mean over its tokens, averaged over replies (the original GRPO)."
    )
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_completion_length: int = Field(64, gt=0, description="New tokens per sampled reply.")
    stop: list[str] = Field(default_factory=list, description="Strings that end a reply (kept in it).")
    engine: Literal["generate", "continuous"] = Field(
        "generate", description="Sampling: `generate` decodes the padded batch in lock step (KV cache); "
        "`continuous`: transformers' continuous batching (paged KV cache), for long, uneven replies on GPU."
    )
    eval_prompts: int = Field(32, gt=0, description="Held-out prompts whose sampled reward is measured before and after.")
    max_seconds: float | None = Field(None, gt=0)


StageObjective = Literal["sft", "dpo", "reward", "ppo", "safety", "kto", "orpo", "simpo", "grpo", "rloo"]


# Recipe sections a stage may override, and their models.
STAGE_SECTIONS: dict[str, type[Strict]] = {
    "train": TrainSpec, "dpo": DpoSpec, "ppo": PpoSpec, "grpo": GrpoSpec, "kto": KtoSpec, "orpo": OrpoSpec,
    "simpo": SimpoSpec,
}


class StageSpec(Strict):
    objective: StageObjective
    name: str | None = Field(None, description="Default: <recipe name>-<index>-<objective>.")
    data: DataSpec | None = Field(None, description="Default: the recipe's data (safety: the bundled safety set).")
    method: MethodSpec | None = None
    train: dict = Field(default_factory=dict, description="Overrides of `train` keys for this stage.")
    dpo: dict = Field(default_factory=dict, description="Overrides of `dpo` keys for this stage.")
    ppo: dict = Field(default_factory=dict, description="Overrides of `ppo` keys for this stage.")
    grpo: dict = Field(default_factory=dict, description="Overrides of `grpo` keys (grpo and rloo stages).")
    kto: dict = Field(default_factory=dict, description="Overrides of `kto` keys for this stage.")
    orpo: dict = Field(default_factory=dict, description="Overrides of `orpo` keys for this stage.")
    simpo: dict = Field(default_factory=dict, description="Overrides of `simpo` keys for this stage.")

    @field_validator("name")
    @classmethod
    def _name_is_identifier(cls, v: str | None) -> str | None:
        return v if v is None else _identifier(v)

    @model_validator(mode="after")
    def _overrides_valid(self) -> StageSpec:
        for key, model in STAGE_SECTIONS.items():
            try:
                model.model_validate({**model().model_dump(), **getattr(self, key)})
            except ValidationError as e:
                err = e.errors()[0]
                where = ".".join(str(p) for p in err["loc"])
                msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
                raise ValueError(f"{key}.{where}: {msg}") from None
        return self


def _identifier(v: str) -> str:
    from lamina.names import RULE, is_name

    if not is_name(v):
        raise ValueError(f"{v!r} is not a valid name (it names directories): use {RULE}")
    return v


class Recipe(Strict):
    name: str = "run"
    seed: int = 0
    model: ModelSpec = ModelSpec()
    data: DataSpec
    method: MethodSpec = Field(default_factory=LoraSpec)
    train: TrainSpec = TrainSpec()
    distributed: DistributedSpec = DistributedSpec()
    output: OutputSpec = OutputSpec()
    tracking: TrackingSpec = TrackingSpec()
    intake: IntakeSpec = IntakeSpec()
    eval: EvalSpec = EvalSpec()
    dpo: DpoSpec = DpoSpec()
    ppo: PpoSpec = PpoSpec()
    grpo: GrpoSpec = GrpoSpec()
    kto: KtoSpec = KtoSpec()
    orpo: OrpoSpec = OrpoSpec()
    simpo: SimpoSpec = SimpoSpec()
    rollout: RolloutSpec = RolloutSpec()
    stages: list[StageSpec] = Field(default_factory=list, description="Ordered post-training layers.")

    @field_validator("name")
    @classmethod
    def _name_is_identifier(cls, v: str) -> str:
        return _identifier(v)


def _format_errors(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        # Drop the discriminator tag pydantic inserts into union paths (method.lora.r -> method.r).
        loc = [str(p) for p in e["loc"] if not (isinstance(p, str) and p in _METHOD_TAGS)]
        key = ".".join(loc) or "(recipe)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"{source}: {key}: {msg}")
    return "\n".join(lines)


METHOD_NAMES = ("full", "lora", "qlora", "bottleneck", "ia3", "prompt", "prefix", "bitfit")
_METHOD_TAGS = set(METHOD_NAMES)


def parse_recipe(data: dict, source: str = "recipe") -> Recipe:
    if not isinstance(data, dict):
        raise LaminaError("a recipe must be a YAML mapping", source)
    try:
        return Recipe.model_validate(data)
    except ValidationError as e:
        raise LaminaError(_format_errors(e, source)) from None


def apply_overrides(data: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """`train.lr=1e-4 method.r=32` set into the recipe's mapping (values read as YAML), before
    validation, so an override is checked exactly like the file."""
    data = yaml.safe_load(yaml.safe_dump(data))  # a deep copy
    for item in overrides:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise LaminaError("an override is KEY=VALUE with a dotted key, e.g. train.lr=1e-4", item)
        node = data
        for i, part in enumerate(parts[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise LaminaError(f"{'.'.join(parts[: i + 1])} is not a section", item)
        try:
            node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else raw
        except yaml.YAMLError:
            node[parts[-1]] = raw
    if overrides and isinstance(data.get("method"), dict):
        data["method"].setdefault("name", LoraSpec().name)  # `method.r=32` on the default method
    return data


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """The recipe at `path`, with `overrides` (KEY=VALUE) applied, validated, paths anchored."""
    path = Path(path)
    if not path.is_file():
        raise LaminaError("no such recipe file", str(path))
    try:
        data = yaml.safe_load(path.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        raise LaminaError(f"not UTF-8 text (byte {e.start}); save the recipe as UTF-8", str(path)) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise LaminaError(f"not valid YAML: {getattr(e, 'problem', e)}", where) from None
    if overrides:
        if not isinstance(data, dict):
            raise LaminaError("a recipe must be a YAML mapping", str(path))
        data = apply_overrides(data, overrides)
    recipe = parse_recipe(data, f"{path} (with {' '.join(overrides)})" if overrides else str(path))
    anchor_paths(recipe, path.parent)
    return recipe


PATH_RULE = (
    "Every path in a recipe is relative to the recipe file (absolute paths are kept); `model.base` is a "
    "hub id when no directory of that name is there."
)


def _anchored(value: str | None, base: Path) -> str | None:
    if not value or value.startswith("hub:") or Path(value).expanduser().is_absolute():
        return str(Path(value).expanduser()) if value and value.startswith("~") else value
    return str((base / value).resolve())


def anchor_paths(recipe: Recipe, base: Path) -> None:
    """Apply PATH_RULE: resolve every relative path of `recipe` against `base` (its directory)."""
    for data in [recipe.data, *(s.data for s in recipe.stages if s.data is not None)]:
        data.train, data.eval = _anchored(data.train, base), _anchored(data.eval, base)
    recipe.intake.contamination_eval = [_anchored(v, base) for v in recipe.intake.contamination_eval]
    recipe.eval.eval_file = _anchored(recipe.eval.eval_file, base)
    recipe.eval.canaries = _anchored(recipe.eval.canaries, base)
    recipe.output.dir = _anchored(recipe.output.dir, base)
    recipe.ppo.reward_model = _anchored(recipe.ppo.reward_model, base)
    recipe.grpo.reward_model = _anchored(recipe.grpo.reward_model, base)
    recipe.model.chat_template = _anchored(recipe.model.chat_template, base)
    model = recipe.model.base
    if model.startswith((".", "~")) or (model != "tiny" and (base / model).exists()):
        recipe.model.base = _anchored(model, base)
