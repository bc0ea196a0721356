"""`lamina methods --json`: counts and sizes measured on the recipe's base, checked against
what each method must add to the tiny random model (64 wide, 2 layers, 128 MLP)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parents[1] / "spine"))
from helpers import recipe_dict, write_task  # noqa: E402

# The fixture keeps the tiny base head_dim of 32: q is 4 x 32 wide, k and v 2 x 32.
HIDDEN, LAYERS, MLP, Q, KV = 64, 2, 128, 128, 64


def test_methods_table_measures_every_method(tiny_random, tmp_path):
    train_file, _ = write_task(tmp_path / "data", n_train=4, n_eval=1)
    recipe = recipe_dict(tiny_random, train_file)
    recipe["method"] = {"name": "bottleneck", "size": 8}  # the recipe's method keeps its settings
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    r = subprocess.run(
        [sys.executable, "-m", "lamina.cli", "methods", str(tmp_path / "r.yaml"), "--json"],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(r.stdout)
    rows = {row["method"]: row for row in result["methods"]}
    assert set(rows) == {"full", "lora", "qlora", "bottleneck", "ia3", "prompt", "prefix", "bitfit"}
    total = rows["full"]["base_params"]
    assert rows["full"]["trainable_params"] == total and rows["full"]["trainable_pct"] == 100.0
    per_layer_out = Q + KV + KV + HIDDEN + MLP + MLP + HIDDEN  # q k v o gate up down
    assert rows["bitfit"]["trainable_params"] == LAYERS * per_layer_out
    assert rows["bottleneck"]["trainable_params"] == LAYERS * (HIDDEN * 8 + 8 + 8 * HIDDEN + HIDDEN)
    assert rows["prompt"]["trainable_params"] == 16 * HIDDEN
    assert rows["ia3"]["trainable_params"] == LAYERS * (KV + KV + MLP)  # k, v outputs; down_proj input
    assert rows["lora"]["trainable_params"] == rows["qlora"]["trainable_params"] > 0
    for name, row in rows.items():
        # fp32 tensors on disk, plus a small config; adapters far below the whole model
        assert row["artifact_bytes"] >= 4 * row["trainable_params"], name
        if name != "full":
            assert row["artifact_bytes"] < rows["full"]["artifact_bytes"] / 2, name
        assert abs(row["trainable_pct"] - 100 * row["trainable_params"] / total) < 1e-3
    assert {n for n, row in rows.items() if row["mergeable"]} == {"full", "lora", "qlora", "ia3", "bitfit"}
    assert {n for n, row in rows.items() if row["serving"].startswith("batched")} == {"lora", "qlora"}
    assert {n for n, row in rows.items() if "no KV cache" in row["serving"]} == {"prompt", "prefix"}
    assert rows["prompt"]["inference_overhead"].startswith("+16 tokens")
    assert "2 adapter" not in rows["bottleneck"]["inference_overhead"]  # pfeiffer: one per layer
