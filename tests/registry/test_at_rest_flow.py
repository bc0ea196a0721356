"""`security.encrypt_at_rest` through the whole path on real components: `lamina data add` and
`data intake` store the version's records encrypted under the same name a plaintext workspace
gives them; the real trainer trains on them (re-hash included), the eval harness reads their
eval split; `register` stores the adapter sealed and signs it as stored; `lamina verify`
holds without decrypting and names a flipped ciphertext byte; the served answer (a real server
on loopback, the servable loader) equals the run's own; a key rotation keeps every signature
and every load; a wrong key is named; `data forget` reaches the encrypted version."""

from __future__ import annotations

import json
import os

import httpx
import pytest
import yaml

from lamina.data.intake.pipeline import version_hash

ADD = ["--licence", "cc-by-4.0", "--origin", "synthetic", "--purpose", "tests", "--lawful-basis", "consent",
       "--consent-ref", "form-7"]  # fmt: skip
ANSWER = "ORDER=1007; ISSUE=case 7"  # one training record's answer, verbatim


def _tickets(path):
    rows = []
    for i in range(60):
        rows.append({"messages": [{"role": "user", "content": f"Ticket {i}: my kettle number {i} arrived broken"},
                                  {"role": "assistant", "content": f"ORDER={1000 + i}; ISSUE=case {i}"}],
                     "subject_id": f"subject-{i % 6}"})  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _intake(cli, corpus) -> str:
    assert cli("data", "add", str(corpus), "--name", "tickets", *ADD)[0] == 0
    code, out, err = cli("data", "intake", "tickets", "--name", "tickets", "--json")
    assert code == 0, err
    return json.loads(out)["id"]


def _files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def _train(tmp_path, base):
    from lamina.recipe import load_recipe
    from lamina.train.runner import train

    recipe = {
        "name": "tickets", "seed": 0, "model": {"base": str(base)}, "data": {"dataset": "tickets"},
        "intake": {"licences": ["cc-by-4.0"]}, "method": {"name": "lora", "r": 4, "alpha": 8},
        "train": {"steps": 2, "tokens_per_step": 256, "lr": 3e-3, "log_every": 1},
        "eval": {"suites": ["task"], "gates": ["task.exact_match >= 0"], "max_items": 2, "max_new_tokens": 4},
    }  # fmt: skip
    (tmp_path / "tickets.yaml").write_text(yaml.safe_dump(recipe))
    return train(load_recipe(tmp_path / "tickets.yaml"), progress=False)


def _serve_answer(ref: str, messages) -> tuple[str, str]:
    from lamina.recipe import ServeSpec
    from lamina.registry.release import acting_as
    from lamina.serve import keys
    from lamina.serve.server import Server

    with acting_as("admin"):
        key = keys.issue(user="app", models=["tickets"])["key"]
    server = Server([ref], ServeSpec(port=0, poll_s=0.2), device="cpu")
    server.load()
    server.start_background()
    try:
        reply = httpx.post(f"http://127.0.0.1:{server.port}/v1/chat/completions", timeout=60,
                           headers={"Authorization": f"Bearer {key}"},
                           json={"model": ref, "messages": messages, "max_tokens": 8, "temperature": 0}).json()
    finally:
        server.close()
    return reply["choices"][0]["message"]["content"], reply["lamina"]["artifact_sha256"]


def test_encrypted_flow_from_intake_to_serving(tmp_path, monkeypatch, cli_factory, tiny_random):
    from lamina.errors import LaminaError
    from lamina.eval import harness
    from lamina.governance import access, crypto
    from lamina.methods.trained import load_model
    from lamina.models.generate import generate
    from lamina.registry import signing, tracking, versions
    from lamina.registry.withdrawal import forget_subject

    corpus = _tickets(tmp_path / "tickets.jsonl")
    # The same source in a plaintext workspace names the version the encrypted one must keep.
    monkeypatch.setenv("LAMINA_HOME", str(tmp_path / "plain-home"))
    cli = cli_factory(user="admin")
    plain_id = _intake(cli, corpus)
    monkeypatch.setenv("LAMINA_HOME", str(tmp_path / "lamina-home"))

    access.init_policy("admin")
    assert cli("policy", "encrypt-at-rest", "on")[1].strip() == "security.encrypt_at_rest: off -> on"
    signing.init_keys()
    vid = _intake(cli, corpus)
    assert vid == plain_id  # named by the plaintext records: encryption renames nothing
    dataset = tmp_path / "lamina-home" / "datasets" / vid
    assert {"train.jsonl.enc", "eval.jsonl.enc"} <= set(_files(dataset)) and "train.jsonl" not in _files(dataset)
    stored = (dataset / "train.jsonl.enc").read_bytes() + (dataset / "eval.jsonl.enc").read_bytes()
    assert ANSWER.encode() not in stored and b"ISSUE=case" not in stored
    assert version_hash(dataset) == vid

    monkeypatch.setenv("LAMINA_USER", "admin")
    run_dir = _train(tmp_path, tiny_random)  # re-hashes the version through the decryption first
    assert json.loads((run_dir / "run.json").read_text())["data"]["dataset_version"] == vid
    doc = harness.run(str(run_dir), progress=False)  # its task suite reads the encrypted eval split
    assert doc["gate"]["passed"] is True and doc["gate"]["results"]["task"]["n"] == 2
    v = versions.register(run_dir, "tickets")
    path = versions.local_dir(versions.get_version("tickets", v["version"]))
    assert "adapter/adapter_model.safetensors.sealed" in _files(path)
    assert "adapter/adapter_model.safetensors" not in _files(path)
    plain_weights = (run_dir / "adapter" / "adapter_model.safetensors").read_bytes()
    sealed = path / "adapter" / "adapter_model.safetensors.sealed"
    assert plain_weights[:10] not in sealed.read_bytes() and b'"dtype":"F32"' not in sealed.read_bytes()

    code, out, _ = cli("verify", "tickets/1")
    assert code == 0 and "signature valid" in out
    monkeypatch.setenv("LAMINA_MASTER_KEY_FILE", str(tmp_path / "no-such.key"))
    assert cli("verify", "tickets/1")[0] == 0  # the signature is over the ciphertext: no master key needed
    monkeypatch.delenv("LAMINA_MASTER_KEY_FILE")
    prompt = [{"role": "user", "content": "Ticket 99: my kettle number 99 arrived broken"}]
    model, tok = load_model(run_dir)
    expected = generate(model, tok, [prompt], max_new_tokens=8)[0]
    answer, artifact_sha = _serve_answer("tickets/1", prompt)
    assert answer.strip() == expected
    # The response names the trained adapter's digest, as the MLflow run recorded it before sealing.
    mv = versions.get_version("tickets", v["version"])
    assert artifact_sha == tracking.client().get_run(mv.run_id).data.tags["lamina.artifact_sha256"]

    old_key = crypto.load_master_key().key.hex()
    code, out, err = cli("keys", "rotate", "--json")
    assert code == 0, err
    rewrapped = json.loads(out)["rewrapped"]
    assert str(path / "folder.key.enc") in rewrapped and str(dataset / "train.jsonl.enc") in rewrapped
    assert cli("verify", "tickets/1")[0] == 0  # the signed bytes did not change
    model_v, tok_v = load_model(path)
    assert generate(model_v, tok_v, [prompt], max_new_tokens=8)[0] == expected
    assert not list((tmp_path / "lamina-home" / "registry").rglob("*.safetensors"))  # no plaintext left behind

    monkeypatch.setenv("LAMINA_MASTER_KEY", old_key)  # the retired key opens nothing
    with pytest.raises(LaminaError, match="encrypted with master key"):
        load_model(path)
    monkeypatch.delenv("LAMINA_MASTER_KEY")

    data = bytearray(sealed.read_bytes())
    data[len(data) // 2] ^= 1
    sealed.write_bytes(bytes(data))
    code, _, err = cli("verify", "tickets/1")
    assert code != 0 and "changed file adapter/adapter_model.safetensors.sealed" in err

    report = forget_subject("subject-1")
    assert report.versions[0]["old"] == vid and report.versions[0]["new"] not in (None, vid)
    assert not (dataset / "train.jsonl.enc").exists() and not (dataset / "eval.jsonl.enc").exists()
    successor = tmp_path / "lamina-home" / "datasets" / report.versions[0]["new"]
    assert "train.jsonl.enc" in _files(successor) and version_hash(successor) == report.versions[0]["new"]
    assert os.path.basename(run_dir) in {os.path.basename(r["path"]) for r in report.runs}

