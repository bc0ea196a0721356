"""The bad-input battery: every command fed what a new user gets wrong.

Each case runs `lamina` in-process through `lamina.cli.main` (the installed script's entry
point) on a fresh copy of one prepared workspace, and must end with all three of: an exit
code other than 0 and exactly one line on stderr, `error: ...`, naming the file, line or key
at fault; no traceback; every file under LAMINA_HOME (and the MLflow store beside it)
byte-identical, and no file or directory added or removed. Nothing here trains.
"""

from __future__ import annotations

import copy
import io
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from bad_inputs_workspace import ADD, PYTHON, Env, clone, fingerprint, invoke, prepare, python_env

DROP = object()  # in a recipe override: remove the key


@dataclass
class Case:
    id: str
    args: list[str]
    expect: str  # must appear in the one error line: the file, line or key at fault
    recipe: dict | bytes | None = None  # overrides of BASE_RECIPE, or the file's raw bytes
    env: Env = field(default_factory=Env)
    setup: str | None = None  # name of a function in SETUPS that changes the copy first
    # A refusal (role, four-eyes, gate, identity): the audit log gains its one `denied` entry, and the
    # head moves where it is kept outside the workspace (and in the tracking store when the
    # command had opened it) — nothing else.
    denied: bool = False


BASE_RECIPE = {
    "name": "t",
    "model": {"base": "{tiny}"},
    # The licence the prepared workspace took tickets.jsonl in under: one file has one licence.
    "data": {"train": "{in}/tickets.jsonl", "licence": "cc-by-4.0", "max_length": 128,
             "provenance": {"origin": "synthetic", "purpose": "tests", "lawful_basis": "contract"}},
    "method": {"name": "lora", "r": 4, "alpha": 8},
    "train": {"steps": 2, "tokens_per_step": 256},
    "intake": {"workers": 1},
}


def merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if value is DROP:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def train(expect: str, id: str, **recipe) -> Case:
    return Case(id, ["train", "{recipe}", "--quiet"], expect, recipe=recipe)


def add(file: str, expect: str, id: str, *extra: str, name: str = "new") -> Case:
    """`data add` of FILE (relative to the inputs) with valid metadata unless `extra` overrides."""
    args = ["data", "add", f"{{in}}/{file}", "--name", name, *ADD, *extra]
    return Case(id, args, expect)


# Data files every reader must refuse, with the line the error must name.
BAD_FILES = [
    ("surrogate.jsonl", "surrogate.jsonl:2", "lone-surrogate"),
    ("badjson.jsonl", "badjson.jsonl:3", "malformed-json"),
    ("latin1.jsonl", "latin1.jsonl:2", "not-utf8"),
    ("empty.jsonl", "empty.jsonl", "empty-file"),
    ("blank.jsonl", "blank.jsonl", "only-blank-lines"),
    ("array.jsonl", "array.jsonl:2", "array-line"),
    ("no_assistant.jsonl", "no_assistant.jsonl:2", "no-assistant-turn"),
    ("bad_role.jsonl", "bad_role.jsonl:1", "bad-role"),
    ("empty_assistant.jsonl", "empty_assistant.jsonl:2", "empty-assistant"),
    ("content_int.jsonl", "content_int.jsonl:1", "content-not-string"),
    ("messages_empty.jsonl", "messages_empty.jsonl:1", "messages-empty"),
    ("subject_list.jsonl", "subject_list.jsonl:1", "subject-id-list"),
    ("meta_str.jsonl", "meta_str.jsonl:1", "meta-not-object"),
    ("message_extra.jsonl", "message_extra.jsonl:1", "message-extra-key"),
    ("adir.jsonl", "adir.jsonl", "directory"),
    ("missing.jsonl", "missing.jsonl", "missing-file"),
    ("prefs.jsonl", "prefs.jsonl:1", "preference-as-chat"),
]
BAD_PREFERENCE = [
    ("pref_no_rejected.jsonl", "pref_no_rejected.jsonl:1", "pref-no-rejected"),
    ("pref_empty_chosen.jsonl", "pref_empty_chosen.jsonl:1", "pref-empty-chosen"),
    ("pref_prompt_assistant.jsonl", "pref_prompt_assistant.jsonl:1", "pref-prompt-ends-assistant"),
    ("tickets.jsonl", "tickets.jsonl:1", "chat-as-preference"),
]
BAD_PC = [
    ("pc_empty.jsonl", "pc_empty.jsonl:1", "pc-empty-completion"),
    ("tickets.jsonl", "tickets.jsonl:1", "chat-as-pc"),
]

CASES: list[Case] = []
PROGRESS_LINE = re.compile(r"^[\w .-]+: \d+/\d+ \(\d+%\), elapsed ")

# --- data add: bad files in every format, and bad metadata -----------------------------------
CASES += [add(f, where, f"add-{i}") for f, where, i in BAD_FILES]
CASES += [add(f, where, f"add-{i}", "--format", "preference") for f, where, i in BAD_PREFERENCE]
CASES += [add(f, where, f"add-{i}", "--format", "prompt_completion") for f, where, i in BAD_PC]
CASES += [
    add("tickets.jsonl", "--name", "add-name-dotdot", name="../../elsewhere"),
    add("tickets.jsonl", "--name", "add-name-slash", name="a/b"),
    add("tickets.jsonl", "--name", "add-name-dots", name=".."),
    add("tickets.jsonl", "--name", "add-name-hidden", name=".hidden"),
    add("tickets.jsonl", "--name", "add-name-empty", name=""),
    add("tickets.jsonl", "--name", "add-name-space", name="my data"),
    add("tickets.jsonl", "--name", "add-name-backslash", name="a\\b"),
    add("tickets.jsonl", "--format", "add-format-unknown", "--format", "csv-ish"),
    add("tickets.jsonl", "--licence", "add-licence-none", "--licence", "none"),
    add("tickets.jsonl", "--licence", "add-licence-blank", "--licence", " "),
    add("tickets.jsonl", "--lawful-basis", "add-lawful-basis", "--lawful-basis", "whim"),
    add("tickets.jsonl", "--consent-ref", "add-consent-without-ref", "--lawful-basis", "consent"),
    add("tickets.jsonl", "--retain-until", "add-retain-not-date", "--retain-until", "2026-13-01"),
    add("tickets.jsonl", "--personal-data", "add-personal-data", "--personal-data", "maybe"),
    add("tickets.jsonl", "--name", "add-existing-other-bytes", name="licensed"),
    add("licensed.jsonl", "licence", "add-existing-other-licence", name="licensed"),
    add("tickets.jsonl", "origin", "add-existing-other-origin", "--origin", "elsewhere", name="tickets"),
    Case("add-no-name", ["data", "add", "{in}/tickets.jsonl", *ADD], "--name"),
    Case("add-no-file", ["data", "add", "--name", "x", *ADD], "'file'"),
    Case("add-no-licence", ["data", "add", "{in}/tickets.jsonl", "--name", "x", "--origin", "o", "--purpose",
                            "p", "--lawful-basis", "contract"], "--licence"),
    Case("add-unknown-option", ["data", "add", "{in}/tickets.jsonl", "--name", "x", *ADD, "--colour", "red"],
         "--colour"),
    Case("add-viewer", ["data", "add", "{in}/tickets.jsonl", "--name", "x", *ADD], "vera",
         env=Env({"LAMINA_USER": "vera"}), denied=True),
    Case("add-unknown-user", ["data", "add", "{in}/tickets.jsonl", "--name", "x", *ADD], "mallory",
         env=Env({"LAMINA_USER": "mallory"}), denied=True),
]

# --- data intake, show, forget, sweep, pii-report ---------------------------------------------
CASES += [
    Case("intake-unknown-source", ["data", "intake", "nosuch", "--name", "d"], "nosuch"),
    Case("intake-unknown-eval-source", ["data", "intake", "tickets", "--eval-source", "nope", "--name", "d"],
         "nope"),
    Case("intake-name-dotdot", ["data", "intake", "tickets", "--name", "../x"], "--name"),
    Case("intake-name-slash", ["data", "intake", "tickets", "--name", "a/b"], "--name"),
    Case("intake-no-name", ["data", "intake", "tickets"], "--name"),
    Case("intake-no-source", ["data", "intake", "--name", "d"], "'sources"),
    Case("intake-recipe-missing", ["data", "intake", "tickets", "--name", "d", "--recipe", "{tmp}/no.yaml"],
         "no.yaml"),
    Case("intake-recipe-bad-key", ["data", "intake", "tickets", "--name", "d", "--recipe", "{recipe}"],
         "intake.dedup_threshold", recipe={"intake": {"dedup_threshold": 2}}),
    Case("intake-too-few-survive", ["data", "intake", "tickets", "--name", "d", "--recipe", "{recipe}"],
         "intake.min_train_records", recipe={"intake": {"min_train_records": 500}}),
    Case("intake-source-twice", ["data", "intake", "tickets", "--name", "d", "--eval-source", "tickets"],
         "tickets"),
    Case("intake-source-repeated", ["data", "intake", "tickets", "tickets", "--name", "d"], "tickets"),
    Case("show-unknown", ["data", "show", "nosuch-version"], "nosuch-version"),
    Case("show-no-arg", ["data", "show"], "'version'"),
    Case("forget-no-subject", ["data", "forget"], "--subject-id"),
    Case("forget-viewer", ["data", "forget", "--subject-id", "s1"], "vera", env=Env({"LAMINA_USER": "vera"}), denied=True),
    Case("sweep-bad-date", ["data", "sweep", "--today", "yesterday"], "--today"),
    Case("sweep-viewer", ["data", "sweep"], "vera", env=Env({"LAMINA_USER": "vera"}), denied=True),
    Case("pii-report-bad-ner", ["data", "pii-report", "--ner", "sometimes", "--n", "5"], "--ner"),
    Case("pii-report-bad-n", ["data", "pii-report", "--n", "many"], "'--n'"),
    Case("pii-report-recipe-missing", ["data", "pii-report", "--recipe", "{tmp}/no.yaml"], "no.yaml"),
    Case("data-unknown-command", ["data", "nuke"], "nuke"),
]

# --- recipes: the file itself ------------------------------------------------------------------
CASES += [
    Case("recipe-missing", ["train", "{tmp}/nope.yaml"], "nope.yaml"),
    Case("recipe-not-utf8", ["train", "{recipe}"], "r.yaml", recipe="name: caf\xe9\n".encode("latin-1")),
    Case("recipe-bad-yaml", ["train", "{recipe}"], "r.yaml:3", recipe=b"name: t\ndata: [unclosed\n"),
    Case("recipe-bad-indent", ["train", "{recipe}"], "r.yaml:2", recipe=b"name: t\n  data: x\nseed: 1\n"),
    Case("recipe-list", ["train", "{recipe}"], "r.yaml", recipe=b"- a\n- b\n"),
    Case("recipe-empty", ["train", "{recipe}"], "r.yaml", recipe=b""),
    Case("recipe-binary", ["train", "{recipe}"], "r.yaml", recipe=bytes(range(256))),
    Case("recipe-is-dir", ["train", "{in}/full"], "full"),
    Case("train-no-recipe", ["train"], "recipe"),
    Case("train-resume-missing", ["train", "--resume", "{tmp}/gone"], "gone"),
    Case("train-resume-not-run", ["train", "--resume", "{in}/runs/notrun"], "notrun"),
    Case("train-resume-completed", ["train", "--resume", "{in}/runs/done"], "done"),
]

# --- recipes: keys ---------------------------------------------------------------------------
CASES += [
    train("name", "name-dotdot", name="../../../../elsewhere/run"),
    train("name", "name-slash", name="a/b"),
    train("name", "name-dots", name=".."),
    train("name", "name-empty", name=""),
    train("name", "name-absolute", name="/tmp/x"),
    train("stages.0.name", "stage-name-dotdot", stages=[{"objective": "sft", "name": "../up"}]),
    train("stages.0.objective", "stage-objective", stages=[{"objective": "rlaif"}]),
    train("stages.0", "stage-override-key", stages=[{"objective": "sft", "train": {"lrr": 1}}]),
    train("unknown key", "top-unknown-key", trian={"lr": 1}),
    train("train.lrr", "train-section-unknown-key", train={"lrr": 1}),
    train("train.lr", "train-lr-text", train={"lr": "fast"}),
    train("train.lr", "train-lr-negative", train={"lr": -1}),
    train("train.steps", "train-steps-zero", train={"steps": 0}),
    train("train.tokens_per_step", "train-tokens-zero", train={"tokens_per_step": 0}),
    train("micro_tokens", "train-micro-over-step", train={"micro_tokens": 512, "tokens_per_step": 256}),
    train("train.objective", "train-objective", train={"objective": "rlhf"}),
    train("train.precision", "train-precision", train={"precision": "fp8"}),
    train("train.betas", "train-betas", train={"betas": [0.9]}),
    train("method", "method-unknown", method={"name": "dora"}),
    train("method.r", "method-r-zero", method={"name": "lora", "r": 0}),
    train("method.dropout", "method-dropout", method={"name": "lora", "dropout": 1.5}),
    train("method.size", "bottleneck-size", method={"name": "bottleneck", "size": -2}),
    train("method.num_virtual_tokens", "prompt-tokens", method={"name": "prompt", "num_virtual_tokens": 0}),
    train("data", "data-missing", data=DROP),
    train("data", "data-train-and-dataset", data={"dataset": "support"}),
    train("data", "data-neither", data={"train": DROP, "licence": DROP}),
    train("data.format", "data-format", data={"format": "csv"}),
    train("data.max_length", "data-max-length", data={"max_length": 4}),
    train("data.loss_on", "data-loss-on", data={"loss_on": "everything"}),
    train("intake.dedup_threshold", "intake-dedup", intake={"dedup_threshold": 0}),
    train("intake.pii.custom.0.regex", "intake-regex", intake={"pii": {"custom": [{"entity": "X", "regex": "("}]}}),
    train("intake.pii.operator", "intake-operator", intake={"pii": {"operator": "shred"}}),
    train("intake.min_train_records", "intake-min-zero", intake={"min_train_records": 0}),
    train("eval.suites", "eval-suite", eval={"suites": ["speed"]}),
    train("eval.judge.url", "eval-judge-no-url", eval={"judge": {"model": "m"}}),
    train("dpo.beta", "dpo-beta", dpo={"beta": -1}),
    train("ppo.gamma", "ppo-gamma", ppo={"gamma": 2}),
    train("model.allow_pickle", "model-allow-pickle", model={"allow_pickle": "perhaps"}),
    train("seed", "seed-text", seed="abc"),
]

# --- recipes: base model, output, chat template ----------------------------------------------
CASES += [
    train("model.base", "base-missing", model={"base": "{tmp}/no-base"}),
    train("model.base", "base-file", model={"base": "{in}/bases/weights.safetensors"}),
    train("model.base", "base-pickle-only", model={"base": "{in}/bases/pickle"}),
    train("model.base", "base-no-weights", model={"base": "{in}/bases/noweights"}),
    train("model.base", "base-empty-dir", model={"base": "{in}/bases/empty"}),
    train("model.base", "base-hub-id-offline", model={"base": "nosuch-org/nosuch-model"}),
    train("model.base", "base-broken-tokenizer", model={"base": "{in}/bases/broken"}),
    train("model.chat_template", "base-no-chat-template", model={"base": "{in}/bases/notemplate"}),
    train("model.chat_template", "chat-template-missing",
          model={"base": "{in}/bases/notemplate", "chat_template": "{tmp}/none.jinja"}),
    train("model.chat_template", "chat-template-binary",
          model={"base": "{in}/bases/notemplate", "chat_template": "{in}/template.bin"}),
    train("output.dir", "output-dir-is-file", output={"dir": "{in}/afile"}),
    train("output.dir", "output-dir-not-empty", output={"dir": "{in}/full"}),
    train("output.dir", "output-dir-under-file", output={"dir": "{in}/afile/run"}),
]

# --- recipes: data -----------------------------------------------------------------------------
CASES += [train(where, f"train-{i}", data={"train": f"{{in}}/{f}"}) for f, where, i in BAD_FILES]
CASES += [
    train("data.licence", "licence-missing", data={"licence": DROP}),
    train("data.licence", "licence-not-accepted", data={"licence": "gpl-3.0"}),
    train("data.provenance", "provenance-missing", data={"provenance": DROP}),
    train("data.provenance.lawful_basis", "provenance-lawful-basis", data={"provenance": {"lawful_basis": "because"}}),
    train("data.provenance.lawful_basis", "provenance-other-lawful-basis",
          data={"provenance": {"lawful_basis": "legitimate_interest"}}),
    train("intake.licences", "licence-not-in-list", data={"licence": "mit"}, intake={"licences": ["apache-2.0"]}),
    # The same bytes were taken in under `mit`; this recipe declares them `apache-2.0`: both named.
    train("'mit'", "licence-conflict", data={"train": "{in}/licensed.jsonl", "licence": "apache-2.0"}),
    train("'apache-2.0'", "licence-conflict-names-both",
          data={"train": "{in}/licensed.jsonl", "licence": "apache-2.0"}),
    train("data.dataset", "dataset-unknown", data={"train": DROP, "licence": DROP, "provenance": DROP, "dataset": "nosuch"}),
    train("data", "dataset-with-eval", data={"train": DROP, "licence": DROP, "provenance": DROP, "dataset": "support",
                                             "eval": "{in}/eval.jsonl"}),
    train("source tickets", "dataset-licence-refused",
          data={"train": DROP, "licence": DROP, "provenance": DROP, "dataset": "support"}, intake={"licences": ["mit"]}),
    train("eval.jsonl", "eval-file-missing", data={"eval": "{tmp}/eval.jsonl"}),
    train("badjson.jsonl:3", "eval-file-bad", data={"eval": "{in}/badjson.jsonl"}),
    train("intake.min_train_records", "all-duplicates", data={"train": "{in}/dups.jsonl"},
          intake={"min_train_records": 5}),
    train("intake.min_train_records", "all-contaminated", intake={"contamination_eval": ["{in}/tickets.jsonl"]}),
    train("source tickets", "train-file-also-eval-file", data={"eval": "{in}/tickets.jsonl"}),
    train("data.max_length", "every-record-too-long", data={"train": "{in}/long.jsonl", "max_length": 16}),
    train("data.format", "chat-data-for-dpo", train={"objective": "dpo"}),
    train("data.format", "chat-data-for-reward", train={"objective": "reward"}),
    train("tickets.jsonl:1", "chat-data-declared-preference", data={"format": "preference"}),
    train("prefs.jsonl:1", "preference-data-declared-chat", data={"train": "{in}/prefs.jsonl"}),
    train("preference", "preference-data-for-sft",
          data={"train": "{in}/prefs.jsonl", "format": "preference"}),
]

# --- eval, methods, generate, merge, stages ---------------------------------------------------
CASES += [
    Case("eval-missing-target", ["eval", "{tmp}/nothing"], "nothing"),
    Case("eval-bad-suite", ["eval", "{in}/runs/run-a", "--suite", "speed"], "--suite"),
    Case("eval-recipe-missing", ["eval", "{in}/runs/run-a", "--recipe", "{tmp}/no.yaml"], "no.yaml"),
    Case("eval-no-target", ["eval"], "'target'"),
    Case("eval-gates-only-no-report", ["eval", "{in}/runs/nogate", "--gates-only"], "nogate"),
    Case("eval-gates-only-unknown-version", ["eval", "tickets/9", "--gates-only"], "tickets/9"),
    Case("eval-gates-only-with-suite", ["eval", "{in}/runs/run-a", "--gates-only", "--suite", "task"],
         "--gates-only"),
    Case("methods-recipe-missing", ["methods", "{tmp}/no.yaml"], "no.yaml"),
    Case("methods-recipe-bad", ["methods", "{recipe}"], "method", recipe={"method": {"name": "dora"}}),
    Case("methods-base-missing", ["methods", "{recipe}"], "model.base", recipe={"model": {"base": "{tmp}/nb"}}),
    Case("generate-missing-model", ["generate", "{tmp}/nothing", "-p", "hi"], "nothing"),
    Case("generate-no-prompt", ["generate", "{tiny}"], "--prompt"),
    Case("generate-pickle-base", ["generate", "{in}/bases/pickle", "-p", "hi"], "model.base"),
    Case("generate-tokens-text", ["generate", "{tiny}", "-p", "hi", "--max-new-tokens", "lots"],
         "--max-new-tokens"),
    Case("merge-missing-run", ["merge", "{tmp}/nothing", "--out", "{tmp}/m"], "nothing"),
    Case("merge-not-run", ["merge", "{in}/runs/notrun", "--out", "{tmp}/m"], "notrun"),
    Case("merge-no-out", ["merge", "{in}/runs/run-a"], "--out"),
    Case("merge-out-exists", ["merge", "{in}/runs/run-a", "--out", "{in}/full"], "full"),
    Case("generate-run-base-gone", ["generate", "{in}/runs/done", "-p", "hi"], "run.json"),
    Case("generate-not-a-model", ["generate", "{in}/full", "-p", "hi"], "full"),
    Case("eval-not-a-model", ["eval", "{in}/full", "--suite", "task"], "full"),
    Case("eval-run-no-held-out", ["eval", "{in}/runs/done", "--suite", "task"], "eval.eval_file"),
    Case("demo-unknown-method", ["demo", "--method", "dora"], "--method"),
    train("record 1", "chat-template-raises", model={"chat_template": "{in}/raises.jinja"}),
    train("record 1", "chat-template-syntax", model={"chat_template": "{in}/syntax.jinja"}),
    Case("stages-missing", ["stages", "run", "{tmp}/no.yaml"], "no.yaml"),
    Case("stages-bad-objective", ["stages", "run", "{recipe}"], "stages.0.objective",
         recipe={"stages": [{"objective": "magic"}]}),
    Case("stages-name-dotdot", ["stages", "run", "{recipe}"], "stages.0.name",
         recipe={"stages": [{"objective": "sft", "name": "../../x"}]}),
]

# --- registry: track, register, promote, rollback, history, lineage, verify, policy, keys -------
CASES += [
    Case("track-missing", ["track", "{tmp}/nothing"], "nothing"),
    Case("track-not-run", ["track", "{in}/runs/notrun"], "notrun"),
    Case("register-missing-run", ["register", "{tmp}/nothing", "--name", "m"], "nothing"),
    Case("register-name-dotdot", ["register", "{in}/runs/run-a", "--name", "../../m"], "name"),
    Case("register-name-slash", ["register", "{in}/runs/run-a", "--name", "a/b"], "name"),
    Case("register-not-tracked", ["register", "{in}/runs/done", "--name", "m"], "no training run logged"),
    Case("register-no-gate", ["register", "{in}/runs/nogate", "--name", "m"], "gate.json"),
    Case("register-failed-gate", ["register", "{in}/runs/failedgate", "--name", "m"], "failedgate", denied=True),
    Case("register-viewer", ["register", "{in}/runs/run-a", "--name", "m"], "vera",
         env=Env({"LAMINA_USER": "vera"}), denied=True),
    Case("promote-bad-alias", ["promote", "tickets", "1", "--to", "prod"], "prod"),
    Case("promote-unknown-model", ["promote", "nosuch", "1", "--to", "staging"], "nosuch"),
    Case("promote-unknown-version", ["promote", "tickets", "9", "--to", "staging"], "tickets/9"),
    Case("promote-version-text", ["promote", "tickets", "one", "--to", "staging"], "'version'"),
    Case("promote-same-version", ["promote", "tickets", "1", "--to", "staging"], "tickets@staging",
         env=Env({"LAMINA_USER": "bob"})),
    Case("promote-four-eyes", ["promote", "tickets", "1", "--to", "production"], "tickets/1", denied=True),
    Case("promote-as-bob-without-his-key", ["promote", "tickets", "1", "--to", "production"], "LAMINA_USER",
         env=Env({"LAMINA_USER": "bob", "LAMINA_CONFIG_DIR": "{tmp}/alices-config"}), denied=True),
    Case("promote-viewer", ["promote", "tickets", "1", "--to", "staging"], "vera",
         env=Env({"LAMINA_USER": "vera"}), denied=True),
    Case("rollback-unknown-model", ["rollback", "nosuch", "--reason", "r"], "nosuch"),
    Case("rollback-name-dotdot", ["rollback", "../../x", "--reason", "r"], "../../x"),
    Case("rollback-no-reason", ["rollback", "tickets"], "--reason"),
    Case("rollback-blank-reason", ["rollback", "tickets", "--reason", " "], "tickets@production"),
    Case("rollback-bad-alias", ["rollback", "tickets", "--alias", "canary", "--reason", "r"], "canary"),
    Case("rollback-nothing-before", ["rollback", "tickets", "--alias", "staging", "--reason", "r"],
         "tickets@staging"),
    Case("rollback-viewer", ["rollback", "tickets", "--reason", "r"], "vera", env=Env({"LAMINA_USER": "vera"}), denied=True),
    Case("history-unknown", ["history", "nosuch"], "nosuch"),
    Case("history-name-dotdot", ["history", "../x"], "../x"),
    # rollout, monitor, incident (issue 15)
    Case("rollout-no-mode", ["rollout", "start", "tickets", "1", "--alias", "staging"], "tickets@staging"),
    Case("rollout-canary-over-100", ["rollout", "start", "tickets", "1", "--alias", "staging", "--canary", "150"],
         "--canary 150"),
    Case("rollout-unknown-model", ["rollout", "start", "nosuch", "1", "--alias", "staging", "--canary", "10"],
         "nosuch"),
    Case("rollout-bad-alias", ["rollout", "start", "tickets", "1", "--alias", "canary", "--canary", "10"], "canary"),
    Case("rollout-bad-guard", ["rollout", "start", "tickets", "1", "--alias", "staging", "--canary", "10",
                               "--guard", "live.eror_rate <= 0.1"], "rollout.guards", env=Env({"LAMINA_USER": "bob"})),
    Case("rollout-step-none-active", ["rollout", "step", "tickets", "--to", "50", "--alias", "staging"],
         "tickets@staging"),
    Case("rollout-abort-no-reason", ["rollout", "abort", "tickets", "--reason", " "], "tickets@production"),
    Case("rollout-status-unknown", ["rollout", "status", "nosuch"], "nosuch"),
    Case("monitor-unknown", ["monitor", "nosuch", "--json"], "nosuch"),
    Case("incident-bad-severity", ["incident", "open", "tickets", "--severity", "huge", "--summary", "s"], "huge"),
    Case("incident-blank-summary", ["incident", "open", "tickets", "--severity", "low", "--summary", " "], "tickets"),
    Case("incident-bad-signal", ["incident", "open", "tickets", "--severity", "low", "--summary", "s",
                                 "--signal", "pii_in_outputs=lots"], "--signal"),
    Case("incident-show-unknown", ["incident", "show", "7"], "incident 7"),
    Case("incident-close-no-retro", ["incident", "close", "7", "--retrospective", "{tmp}/retro.md"], "retro.md"),
    Case("incident-viewer", ["incident", "open", "tickets", "--severity", "low", "--summary", "s"], "vera",
         env=Env({"LAMINA_USER": "vera"}), denied=True),
    Case("drill-production", ["incident", "drill", "tickets", "--alias", "production"], "tickets@production"),
    Case("drill-unknown-model", ["incident", "drill", "nosuch"], "nosuch@staging"),  # no lock file left either
    Case("lineage-nothing", ["lineage"], "reference"),
    Case("lineage-both", ["lineage", "tickets@staging", "--dataset", "support"], "reference"),
    Case("lineage-bad-ref", ["lineage", "tickets"], "tickets"),
    Case("lineage-unknown-alias", ["lineage", "tickets@production"], "tickets@production"),
    Case("lineage-unknown-version", ["lineage", "tickets/7"], "tickets/7"),
    Case("lineage-dataset-unknown", ["lineage", "--dataset", "nosuch-dataset"], "--dataset nosuch-dataset"),
    Case("lineage-dataset-unknown-sha", ["lineage", "--dataset", "ab" * 32], "--dataset"),
    Case("verify-unknown", ["verify", "nosuch@production"], "nosuch"),
    Case("verify-unsigned-dir", ["verify", "{in}/runs/notrun"], "notrun"),
    Case("policy-unknown-role", ["policy", "grant", "bob", "wizard"], "policy.yaml"),
    Case("policy-not-admin", ["policy", "grant", "bob", "admin"], "bob", env=Env({"LAMINA_USER": "bob"}), denied=True),
    Case("policy-encrypt-bad-state", ["policy", "encrypt-at-rest", "maybe"], "state 'maybe'"),
    Case("policy-encrypt-not-admin", ["policy", "encrypt-at-rest", "on"], "bob", env=Env({"LAMINA_USER": "bob"}),
         denied=True),
    Case("keys-init-exists", ["keys", "init"], "signing"),
    Case("keys-rotate-bad-target", ["keys", "rotate", "--new-key-file", "{tmp}/no/such/dir/k"], "--new-key-file"),
    Case("keys-rotate-target-dir", ["keys", "rotate", "--new-key-file", "{in}/full"], "--new-key-file"),
    Case("keys-rotate-viewer", ["keys", "rotate"], "vera", env=Env({"LAMINA_USER": "vera"}), denied=True),
    Case("keys-revoke-unknown", ["keys", "revoke", "abcdef012345"], "key abcdef012345"),
    Case("init-policy-corrupt", ["init"], "policy.yaml", setup="corrupt_policy"),
    Case("init-master-key-binary", ["init"], "binary.key", env=Env({"LAMINA_MASTER_KEY_FILE": "{in}/binary.key"})),
    Case("unknown-command", ["deploy"], "deploy"),
]

# --- broken environments ----------------------------------------------------------------------
DATA_ADD = ["data", "add", "{in}/tickets.jsonl", "--name", "fresh", *ADD]
CASES += [
    Case("env-master-key-binary", DATA_ADD, "binary.key", env=Env({"LAMINA_MASTER_KEY_FILE": "{in}/binary.key"})),
    Case("env-master-key-short", DATA_ADD, "short.key", env=Env({"LAMINA_MASTER_KEY_FILE": "{in}/short.key"})),
    Case("env-master-key-missing", DATA_ADD, "gone.key", env=Env({"LAMINA_MASTER_KEY_FILE": "{tmp}/gone.key"})),
    Case("env-master-key-value", DATA_ADD, "LAMINA_MASTER_KEY", env=Env({"LAMINA_MASTER_KEY": "zz"})),
    Case("env-wrong-master-key", ["data", "intake", "tickets", "--name", "d2"], "LAMINA_MASTER_KEY",
         env=Env({"LAMINA_MASTER_KEY": "11" * 32})),
    Case("env-policy-corrupt", DATA_ADD, "policy.yaml", setup="corrupt_policy"),
    Case("env-policy-unknown-key", DATA_ADD, "policy.yaml", setup="policy_unknown_key"),
    Case("env-policy-binary", DATA_ADD, "policy.yaml", setup="binary_policy"),
    Case("env-policy-unknown-role", DATA_ADD, "users.alice.0", setup="policy_unknown_role"),
    Case("env-catalog-corrupt", ["data", "list"], "catalog.db", setup="corrupt_catalog"),
    Case("env-catalog-corrupt-add", DATA_ADD, "catalog.db", setup="corrupt_catalog"),
    Case("env-catalog-is-dir", ["data", "list"], "catalog.db", setup="catalog_is_dir"),
    Case("env-home-is-file", ["data", "list"], "LAMINA_HOME", env=Env({"LAMINA_HOME": "{in}/afile"})),
    Case("env-home-under-file", ["data", "list"], "LAMINA_HOME", env=Env({"LAMINA_HOME": "{in}/afile/home"})),
    Case("env-home-unwritable", ["data", "list"], "LAMINA_HOME", env=Env({"LAMINA_HOME": "/proc/lamina-home"})),
    Case("env-catalog-dir-is-file", ["data", "list"], "catalog", setup="catalog_area_is_file"),
    Case("env-tracking-unreachable-track", ["track", "{in}/runs/done"], "LAMINA_TRACKING_URI",
         env=Env({"LAMINA_TRACKING_URI": "http://127.0.0.1:{port}"})),
    Case("env-tracking-unreachable-register", ["register", "{in}/runs/done", "--name", "m"],
         "unreachable", env=Env({"LAMINA_TRACKING_URI": "http://127.0.0.1:{port}"})),
    Case("env-tracking-unreachable-history", ["history", "tickets"], "LAMINA_TRACKING_URI",
         env=Env({"LAMINA_TRACKING_URI": "http://127.0.0.1:{port}"})),
    Case("env-tracking-unreachable-rollback", ["rollback", "tickets", "--reason", "r"], "LAMINA_TRACKING_URI",
         env=Env({"LAMINA_TRACKING_URI": "http://127.0.0.1:{port}"})),
    Case("env-tracking-unreachable-mlflow-var", ["history", "tickets"], "MLFLOW_TRACKING_URI",
         env=Env({"MLFLOW_TRACKING_URI": "http://127.0.0.1:{port}"}, unset=("LAMINA_TRACKING_URI",))),
    Case("env-tracking-unreachable-train", ["train", "{recipe}", "--quiet"], "LAMINA_TRACKING_URI",
         recipe={}, env=Env({"LAMINA_TRACKING_URI": "http://127.0.0.1:{port}"})),
    Case("env-tracking-bad-port", ["history", "tickets"], "LAMINA_TRACKING_URI",
         env=Env({"LAMINA_TRACKING_URI": "http://127.0.0.1:notaport"})),
]


def corrupt_policy(home):
    (home / "policy.yaml").write_text("users: [unclosed\n")


def policy_unknown_key(home):
    (home / "policy.yaml").write_text("users: {alice: [admin]}\nrolez: {}\n")


def binary_policy(home):
    (home / "policy.yaml").write_bytes(bytes(range(128, 256)))


def policy_unknown_role(home):
    (home / "policy.yaml").write_text("users: {alice: [wizard]}\n")


def corrupt_catalog(home):
    (home / "catalog" / "catalog.db").write_bytes(b"this is not an sqlite database" * 100)


def catalog_is_dir(home):
    db = home / "catalog" / "catalog.db"
    db.unlink()
    db.mkdir()


def catalog_area_is_file(home):
    shutil.rmtree(home / "catalog")
    (home / "catalog").write_text("a file where a directory belongs\n")


SETUPS = {f.__name__: f for f in (corrupt_policy, policy_unknown_key, binary_policy, policy_unknown_role,
                                  corrupt_catalog, catalog_is_dir, catalog_area_is_file)}


@pytest.fixture(scope="session")
def prepared(tmp_path_factory, tiny_random):
    """The pristine workspace, made once (session scope: its own monkeypatch and capture)."""
    mp = pytest.MonkeyPatch()
    try:
        with _Capture() as capture:
            return prepare(tmp_path_factory.mktemp("bad-inputs"), tiny_random, capture, mp)
    finally:
        mp.undo()


class _Capture:
    """What capsys does, for a session fixture: stdout and stderr read back per call."""

    def __enter__(self):
        self._saved = sys.stdout, sys.stderr
        self.readouterr()
        return self

    def __exit__(self, *exc):
        sys.stdout, sys.stderr = self._saved

    def readouterr(self):
        out, err = (sys.stdout.getvalue(), sys.stderr.getvalue()) if hasattr(self, "_out") else ("", "")
        self._out, self._err = io.StringIO(), io.StringIO()
        sys.stdout, sys.stderr = self._out, self._err
        return SimpleNamespace(out=out, err=err)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens there


def fill(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return text


def expand(obj, values):
    if isinstance(obj, str):
        return fill(obj, values)
    if isinstance(obj, dict):
        return {k: expand(v, values) for k, v in obj.items() if v is not DROP}
    if isinstance(obj, list):
        return [expand(v, values) for v in obj]
    return obj


def test_the_battery_has_at_least_150_distinct_cases():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 150, len(ids)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(case, prepared, tmp_path, monkeypatch, capsys):
    home, config = clone(prepared, tmp_path, monkeypatch)
    values = {"home": str(home), "in": str(prepared.inputs), "tmp": str(tmp_path), "tiny": str(prepared.tiny),
              "port": str(closed_port()), "recipe": str(tmp_path / "r.yaml")}
    if isinstance(case.recipe, bytes):
        (tmp_path / "r.yaml").write_bytes(case.recipe)
    elif case.recipe is not None:
        (tmp_path / "r.yaml").write_text(yaml.safe_dump(expand(merge(BASE_RECIPE, case.recipe), values)))
    for key in ("MLFLOW_TRACKING_URI", "LAMINA_MASTER_KEY", "LAMINA_MASTER_KEY_FILE", *case.env.unset):
        monkeypatch.delenv(key, raising=False)
    for key, value in case.env.set.items():
        monkeypatch.setenv(key, fill(value, values))
    if case.setup:
        SETUPS[case.setup](home)
    # The pristine workspace too: the MLflow store's artifact root lies there.
    watched = [home, config, prepared.home, prepared.secrets, prepared.tracking_db, prepared.inputs]
    if os.environ["LAMINA_HOME"] != str(home):
        watched.append(Path(os.environ["LAMINA_HOME"]))
    before = fingerprint(*watched)
    code, out, err = invoke([fill(a, values) for a in case.args], capsys)
    # Progress lines (what a log file gets instead of a bar) may precede the error.
    lines = [line for line in err.splitlines() if line.strip() and not PROGRESS_LINE.match(line)]
    assert code not in (0, None), (out, err)
    assert "Traceback" not in out + err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert case.expect in lines[0], lines[0]
    after = fingerprint(*watched)
    if case.denied:
        audit = home / "audit"
        from lamina.governance.audit import pin_path
        from lamina.registry import audit_head

        pin = pin_path()
        moved = {str(pin), str(prepared.tracking_db)}

        def kept(prints):
            return {k: v for k, v in prints.items() if not k.startswith(str(audit) + "/") and k not in moved}

        assert kept(after) == kept(before)
        entries = (audit / "audit.jsonl").read_text().splitlines()
        assert (prepared.home / "audit" / "audit.jsonl").read_text().splitlines() == entries[:-1]
        last = yaml.safe_load(entries[-1])
        assert last["action"] == "denied"
        assert yaml.safe_load(pin.read_text())["hash"] == last["hash"]
        if after[str(prepared.tracking_db)] != before[str(prepared.tracking_db)]:
            assert audit_head.read()["hash"] == last["hash"]
    else:
        assert after == before


def test_a_bom_and_crlf_jsonl_file_is_accepted(prepared, tmp_path, monkeypatch, capsys):
    """What Windows tools write: a byte-order mark and CRLF line ends."""
    home, _ = clone(prepared, tmp_path, monkeypatch)
    lines = (prepared.inputs / "tickets.jsonl").read_bytes().splitlines()
    path = tmp_path / "windows.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b"\r\n".join(lines) + b"\r\n\r\n")
    code, out, err = invoke(["data", "add", str(path), "--name", "windows", *ADD, "--json"], capsys)
    assert code == 0, err
    assert yaml.safe_load(out)["records"] == len(lines)


def test_data_add_repeated_with_the_same_bytes_and_metadata_changes_nothing(prepared, tmp_path, monkeypatch,
                                                                            capsys):
    home, _ = clone(prepared, tmp_path, monkeypatch)
    before = fingerprint(home)
    code, out, err = invoke(["data", "add", str(prepared.inputs / "tickets.jsonl"), "--name", "tickets", *ADD],
                            capsys)
    assert code == 0 and "already registered with these bytes and metadata; nothing changed" in out, err
    assert fingerprint(home) == before


def test_an_unreachable_tracking_server_fails_fast_in_a_real_process(prepared, tmp_path, monkeypatch):
    """The installed entry point, in its own process: one line naming the URI, within seconds
    (MLflow's own retries would take minutes), and nothing written."""
    home, _ = clone(prepared, tmp_path, monkeypatch)
    env = python_env(prepared, home) | {"LAMINA_TRACKING_URI": f"http://127.0.0.1:{closed_port()}"}
    before = fingerprint(home)
    started = time.monotonic()
    proc = subprocess.run([PYTHON, "-m", "lamina.cli", "register", str(prepared.inputs / "runs" / "done"),
                           "--name", "m"], env=env, capture_output=True, text=True, timeout=120)
    seconds = time.monotonic() - started
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("error: LAMINA_TRACKING_URI: the tracking server http://127.0.0.1:")
    assert "unreachable" in proc.stderr and "nothing was logged or registered" in proc.stderr
    assert seconds < 60, seconds  # process start and imports included; the probe itself waits <= 3 s
    assert fingerprint(home) == before


def test_a_workspace_that_is_a_file_is_one_line_in_a_real_process(prepared, tmp_path):
    target = tmp_path / "afile"
    target.write_text("x\n")
    proc = subprocess.run([PYTHON, "-m", "lamina.cli", "data", "list"], env=python_env(prepared, target),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"error: LAMINA_HOME: {target} is a file; the workspace must "
                                                "be a directory"]
    assert target.read_text() == "x\n"


def test_data_intake_repeated_says_nothing_new_was_written(prepared, tmp_path, monkeypatch, capsys):
    home, _ = clone(prepared, tmp_path, monkeypatch)
    datasets = sorted(p.name for p in (home / "datasets").iterdir())
    code, out, err = invoke(["data", "intake", "tickets", "--name", "support", "--recipe",
                             str(prepared.root / "intake.yaml")], capsys)
    assert code == 0 and "(these records were taken in before; nothing new written)" in out, err
    assert sorted(p.name for p in (home / "datasets").iterdir()) == datasets


@pytest.mark.parametrize("over, expect", [
    ({"model": {"base": "{in}/bases/pickle"}}, "model.base"),
    ({"output": {"dir": "{in}/full"}}, "output.dir"),
    ({"data": {"train": "{in}/badjson.jsonl"}}, "badjson.jsonl:3"),
    ({"data": {"licence": "gpl-3.0"}}, "data.licence"),
    ({"data": {"train": "{in}/dups.jsonl"}, "intake": {"min_train_records": 5}}, "intake.min_train_records"),
    ({"data": {"train": "{in}/long.jsonl", "max_length": 16}}, "data.max_length"),
    ({"train": {"objective": "dpo"}}, "data.format"),
], ids=["pickle-base", "output-not-empty", "bad-line", "licence-refused", "all-duplicates", "too-long",
        "chat-data-for-dpo"])
def test_on_a_new_workspace_a_refused_train_leaves_only_the_policy_it_bootstraps(
        over, expect, prepared, tmp_path, monkeypatch, capsys):
    """A new user's first command: the policy (they become its admin) is the only state made —
    no catalog, no keys, no datasets, no run directory."""
    home = tmp_path / "new-home"
    values = {"in": str(prepared.inputs), "tiny": str(prepared.tiny), "tmp": str(tmp_path)}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(expand(merge(BASE_RECIPE, over), values)))
    monkeypatch.setenv("LAMINA_HOME", str(home))
    monkeypatch.setenv("LAMINA_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    code, _, err = invoke(["train", str(tmp_path / "r.yaml"), "--quiet"], capsys)
    assert code == 2 and expect in err and "Traceback" not in err
    made = sorted(str(p.relative_to(home)) for p in home.rglob("*"))
    assert made == ["audit", "audit/.lock", "audit/audit.jsonl", "audit/head.json", "policy.yaml"], made
    assert not (tmp_path / "mlflow.db").exists()
