"""The prepared workspace the bad-input battery copies for every case, and how a case runs.

Built once per session through the CLI itself: a policy (alice admin, bob approver with his
personal key, vera viewer), signing and master keys, a source and a dataset version, a source registered under
`mit` (for the licence-conflict case), and a registered model with staging set. Its MLflow
store lives beside the workspace at one fixed URI, so the in-process client is opened once;
it is fingerprinted with the workspace in every case.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from safetensors.torch import save_file

from lamina.data.synthetic import task_splits

ADD = ["--licence", "cc-by-4.0", "--origin", "synthetic", "--purpose", "tests", "--lawful-basis", "contract"]


@dataclass
class Prepared:
    root: Path
    home: Path  # the pristine workspace; cases run on copies
    inputs: Path  # data files, bases, runs, recipes' targets — outside the workspace
    tracking_db: Path
    tiny: Path
    secrets: Path | None = None  # the workspace's keys, kept outside it (workspace.secrets_dir)

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.tracking_db}"


def fingerprint(*paths: Path) -> dict[str, str]:
    """Every file's sha256 and every directory's existence under `paths` (files themselves too)."""
    out: dict[str, str] = {}
    for root in paths:
        if root.is_file():
            out[str(root)] = hashlib.sha256(root.read_bytes()).hexdigest()
            continue
        if not root.exists():
            out[str(root)] = "absent"
            continue
        for p in sorted(root.rglob("*")):
            out[str(p)] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def invoke(args: list[str], capsys) -> tuple[int, str, str]:
    """Run `lamina ARGS` in-process through the same entry point as the installed script."""
    from lamina.cli import main

    capsys.readouterr()
    try:
        main(list(args))
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def jsonl(path: Path, records: list, raw_lines: dict[int, bytes] | None = None) -> Path:
    """Write records one per line; `raw_lines` puts exact bytes at given 1-based lines."""
    lines = [json.dumps(r).encode() for r in records]
    for lineno, raw in (raw_lines or {}).items():
        lines.insert(lineno - 1, raw)
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def chat(user: str, reply: str) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]}


def write_inputs(d: Path, tiny: Path) -> None:
    train, held = task_splits(n_train=24, n_eval=6)
    jsonl(d / "tickets.jsonl", train)
    jsonl(d / "eval.jsonl", held)
    jsonl(d / "licensed.jsonl", task_splits(n_train=12, n_eval=0, seed=7)[0])
    prefs = [{"prompt": f"question {i}?", "chosen": f"good answer {i}", "rejected": f"bad {i}"} for i in range(12)]
    jsonl(d / "prefs.jsonl", prefs)
    jsonl(d / "pc.jsonl", [{"prompt": f"say {i}", "completion": f"said {i}"} for i in range(12)])
    jsonl(d / "dups.jsonl", [train[0]] * 20)
    jsonl(d / "long.jsonl", [chat(" ".join(f"w{i}x{j}" for j in range(300)), "ok") for i in range(6)])
    ok = chat("hello", "hi")
    jsonl(d / "surrogate.jsonl", [ok, ok], {2: b'{"messages": [{"role": "user", "content": "a\\ud800b"}, '
                                             b'{"role": "assistant", "content": "x"}]}'})
    jsonl(d / "badjson.jsonl", [ok, ok], {3: b'{"messages": [}'})
    jsonl(d / "latin1.jsonl", [ok], {2: '{"messages": "caf\u00e9"}'.encode("latin-1")})
    (d / "empty.jsonl").write_bytes(b"")
    (d / "blank.jsonl").write_bytes(b"\n\n  \n")
    jsonl(d / "array.jsonl", [ok, [1, 2]])
    jsonl(d / "unknown_key.jsonl", [ok, {**ok, "mesages": []}])
    jsonl(d / "no_assistant.jsonl", [ok, {"messages": [{"role": "user", "content": "hi"}]}])
    jsonl(d / "bad_role.jsonl", [{"messages": [{"role": "bot", "content": "hi"}, ok["messages"][1]]}])
    jsonl(d / "empty_assistant.jsonl", [ok, chat("hi", "  ")])
    jsonl(d / "content_int.jsonl", [{"messages": [{"role": "user", "content": 5}, ok["messages"][1]]}])
    jsonl(d / "messages_empty.jsonl", [{"messages": []}])
    jsonl(d / "subject_list.jsonl", [{**ok, "subject_id": ["a"]}])
    jsonl(d / "meta_str.jsonl", [{**ok, "meta": "x"}])
    jsonl(d / "message_extra.jsonl", [{"messages": [{"role": "user", "content": "a", "name": "x"},
                                                     ok["messages"][1]]}])
    jsonl(d / "pref_no_rejected.jsonl", [{"prompt": "q", "chosen": "a"}])
    jsonl(d / "pref_empty_chosen.jsonl", [{"prompt": "q", "chosen": "", "rejected": "b"}])
    jsonl(d / "pref_prompt_assistant.jsonl", [{"prompt": [{"role": "assistant", "content": "a"}],
                                               "chosen": "a", "rejected": "b"}])
    jsonl(d / "pc_empty.jsonl", [{"prompt": "q", "completion": ""}])
    jsonl(d / "pc_extra.jsonl", [{"prompt": "q", "completion": "a", "answer": "b"}])
    (d / "adir.jsonl").mkdir()
    (d / "template.bin").write_bytes(bytes(range(256)))
    (d / "raises.jinja").write_text("{{ raise_exception('this template takes no assistant turns') }}")
    (d / "syntax.jinja").write_text("{% for m in messages %}{{ m.content }")
    (d / "afile").write_text("not a directory\n")
    (d / "full").mkdir()
    (d / "full" / "x").write_text("taken\n")
    (d / "binary.key").write_bytes(bytes(range(200, 232)) * 2)
    (d / "short.key").write_text("abcd\n")
    write_bases(d / "bases", tiny)


def write_bases(d: Path, tiny: Path) -> None:
    d.mkdir()
    notemplate = d / "notemplate"
    shutil.copytree(tiny, notemplate)
    (notemplate / "chat_template.jinja").unlink()
    pickle = d / "pickle"
    pickle.mkdir()
    shutil.copy(tiny / "config.json", pickle)
    (pickle / "pytorch_model.bin").write_bytes(b"not really a pickle")
    noweights = d / "noweights"
    noweights.mkdir()
    shutil.copy(tiny / "config.json", noweights)
    (d / "empty").mkdir()
    (d / "weights.safetensors").write_bytes(b"x")
    broken = d / "broken"
    shutil.copytree(tiny, broken)
    (broken / "tokenizer.json").write_text("{not json")
    (broken / "tokenizer_config.json").write_text("{not json")


def make_run(root: Path, run_id: str, *, gate: bool | None = True, status: str = "completed") -> Path:
    """A run directory shaped like the trainer's (adapter, tokenizer, run.json, gate) without training."""
    run = root / run_id
    for sub in ("adapter", "tokenizer", "eval"):
        (run / sub).mkdir(parents=True)
    save_file({"base_model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.ones(4, 16)},
              str(run / "adapter" / "adapter_model.safetensors"))
    (run / "adapter" / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4}))
    (run / "tokenizer" / "tokenizer.json").write_text(json.dumps({"model": {"type": "BPE"}}))
    recipe = {"name": run_id, "data": {"train": "/data/train.jsonl"}, "method": {"name": "lora", "r": 4}}
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 1.0, "lr": 0.001, "tokens": 10}) + "\n")
    info = {
        "id": run_id, "name": run_id, "status": status, "user": "alice", "seed": 0, "objective": "sft",
        "started": "2026-11-29T01:00:00+0000", "finished": "2026-11-29T01:01:00+0000",
        "method": recipe["method"], "steps": 1, "tokens": 10, "device": "cpu",
        "base": {"ref": "tiny", "path": "/bases/tiny", "files": {}, "tokenizer_files": {},
                 "chat_template_sha256": None},
        "data": {"train": "/data/train.jsonl", "train_sha256": "0" * 64, "dataset_version": "ds-battery-1"},
        "code": {"git_commit": "abc", "dirty": False}, "versions": {"torch": torch.__version__},
    }  # fmt: skip
    (run / "run.json").write_text(json.dumps(info))
    if gate is not None:
        from lamina.registry import signing

        checks = [{"expr": "task.exact_match >= 0.5", "value": 0.8 if gate else 0.2, "threshold": 0.5,
                   "passed": gate}]
        (run / "eval" / "gate.json").write_text(json.dumps({"passed": gate, "checks": checks}))
        results = {"candidate": {"task": {"exact_match": checks[0]["value"]}}}
        (run / "eval" / "report.json").write_text(json.dumps({"candidate": {"run_id": run_id}, "results": results}))
        signing.sign_dir(run / "eval")  # as `lamina eval` signs its verdict, with the workspace key
    return run


def write_runs(d: Path) -> None:
    make_run(d, "run-a")
    make_run(d, "nogate", gate=None)
    make_run(d, "failedgate", gate=False)
    make_run(d, "done")
    (d / "notrun").mkdir()
    (d / "notrun" / "x.txt").write_text("x\n")


@dataclass
class Env:
    """Environment changes a case makes (values may use {home}, {in}, {tmp})."""

    set: dict[str, str] = field(default_factory=dict)
    unset: tuple[str, ...] = ()


def prepare(root: Path, tiny: Path, capsys, monkeypatch) -> Prepared:
    inputs, home = root / "in", root / "home"
    inputs.mkdir(parents=True)
    write_inputs(inputs, tiny)
    prepared = Prepared(root, home, inputs, root / "mlflow.db", tiny)
    monkeypatch.setenv("LAMINA_HOME", str(home))
    monkeypatch.setenv("LAMINA_CONFIG_DIR", str(root / "config"))
    monkeypatch.setenv("LAMINA_TRACKING_URI", prepared.tracking_uri)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("LAMINA_USER", "alice")
    intake_recipe = root / "intake.yaml"
    intake_recipe.write_text("data: {dataset: support}\nintake: {workers: 1, eval_ratio: 0.2}\n")
    steps = [
        ["init"],
        ["keys", "user-init"],  # run as bob: his personal key, enrolled by the grant below
        ["policy", "grant", "bob", "approver"],
        ["policy", "grant", "vera", "viewer"],
        ["data", "add", str(inputs / "tickets.jsonl"), "--name", "tickets", *ADD],
        ["data", "intake", "tickets", "--name", "support", "--recipe", str(intake_recipe)],
        ["data", "add", str(inputs / "licensed.jsonl"), "--name", "licensed", *ADD[:0], "--licence", "mit",
         "--origin", "synthetic", "--purpose", "tests", "--lawful-basis", "contract"],
        ["track", str(inputs / "runs" / "run-a")],
        ["track", str(inputs / "runs" / "nogate")],
        ["track", str(inputs / "runs" / "failedgate")],
        ["register", str(inputs / "runs" / "run-a"), "--name", "tickets"],
    ]
    for args in steps:
        if args[0] == "data" and not (inputs / "runs").exists():
            write_runs(inputs / "runs")  # signed with the key `lamina init` made
        monkeypatch.setenv("LAMINA_USER", "bob" if args[:2] == ["keys", "user-init"] else "alice")
        code, out, err = invoke(args, capsys)
        assert code == 0, (args, out, err)
    monkeypatch.setenv("LAMINA_USER", "bob")
    code, out, err = invoke(["promote", "tickets", "1", "--to", "staging"], capsys)
    assert code == 0, (out, err)
    monkeypatch.setenv("LAMINA_USER", "alice")
    from lamina import workspace

    prepared.secrets = workspace.secrets_dir()
    return prepared


def clone(prepared: Prepared, tmp_path: Path, monkeypatch) -> tuple[Path, Path]:
    """A copy of the prepared workspace at tmp_path/home, with its keys copied to where Lamina
    looks for that path's keys (a config directory of the case's own); the environment points
    at both. Returns (workspace, config directory)."""
    home, config = tmp_path / "home", tmp_path / "config"
    shutil.copytree(prepared.home, home, symlinks=True)
    secrets = config / "workspaces" / hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:16]
    shutil.copytree(prepared.secrets, secrets)
    # Everyone's personal keys: the battery plays alice and bob on one machine.
    shutil.copytree(prepared.secrets.parent.parent / "identities", config / "identities")
    (secrets / "workspace.txt").write_text(f"{home.resolve()}\n")
    monkeypatch.setenv("LAMINA_HOME", str(home))
    monkeypatch.setenv("LAMINA_CONFIG_DIR", str(config))
    monkeypatch.setenv("LAMINA_TRACKING_URI", prepared.tracking_uri)
    monkeypatch.setenv("LAMINA_USER", "alice")
    return home, config


def python_env(prepared: Prepared, home: Path) -> dict[str, str]:
    """The environment of a subprocess case: this checkout first on the path."""
    src = str(Path(__file__).resolve().parents[2] / "src")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
            "LAMINA_HOME": str(home), "LAMINA_TRACKING_URI": prepared.tracking_uri, "LAMINA_USER": "alice",
            "LAMINA_CONFIG_DIR": os.environ["LAMINA_CONFIG_DIR"]}


PYTHON = sys.executable
