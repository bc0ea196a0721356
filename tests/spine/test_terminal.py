"""The terminal and scripts: progress lines in logs, help for every option, choices for closed
sets, --version and -h, KEY=VALUE overrides recorded in the run, no third-party noise."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import yaml
from helpers import recipe_dict, write_task

from lamina.errors import LaminaError
from lamina.progress import Lines


def _cli(args, env=None, **kw):
    env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "lamina.cli", *args], env=env, capture_output=True, text=True,
                          timeout=300, **kw)  # fmt: skip


def test_progress_lines_carry_rate_and_eta_at_a_steady_interval():
    t = [0.0]
    printed: list[str] = []
    lines = Lines("train faq", 100, every=10.0, now=lambda: t[0], write=printed.append, unit="steps")
    for step in range(1, 41):
        t[0] = step * 1.0  # one step a second
        lines.update(step, loss=f"{2.0 / step:.4f}")
    lines.close()
    # at t=1 (first update), then every 10 s, then the closing line
    assert [re.match(r"train faq: (\d+)/100", p).group(1) for p in printed] == ["1", "11", "21", "31", "40"]
    assert printed[-1] == "train faq: 40/100 steps (40%), loss 0.0500, elapsed 0:00:40, ETA 0:01:00"


def test_every_option_has_help_and_closed_sets_are_choices():
    import typer.main

    from lamina.cli import app

    missing = []

    def walk(cmd, path):
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                walk(sub, f"{path} {name}")
            return
        missing.extend(f"{path} {p.opts}" for p in cmd.params if not getattr(p, "help", None))

    walk(typer.main.get_command(app), "lamina")
    assert missing == []
    bad = _cli(["data", "add", "f.jsonl", "--name", "n", "--licence", "mit", "--origin", "o", "--purpose", "p",
                "--lawful-basis", "contract", "--personal-data", "maybe"])  # fmt: skip
    flat = re.sub(r"[\s│╭╮╰╯─]+", " ", bad.stderr)  # the error box wraps lines
    assert bad.returncode == 2 and "'maybe' is not one of 'yes', 'no'" in flat


def test_version_short_help_and_a_root_help_true_to_the_commands():
    from lamina import __version__

    assert _cli(["--version"]).stdout.strip() == f"lamina {__version__}"
    short = _cli(["train", "-h"])
    assert short.returncode == 0 and "KEY=VALUE" in short.stdout
    root = _cli(["-h"]).stdout
    # the summary promises serving only while a serve command exists (it did before one did)
    import typer.main

    from lamina.cli import app

    commands = set(typer.main.get_command(app).commands)
    assert ("serving" in root.split("Options")[0]) == ("serve" in commands)
    for command in commands:
        assert re.search(rf"\b{command}\b", root)


def test_overrides_are_validated_like_the_file(tmp_path):
    from lamina.recipe import load_recipe

    train_file, _ = write_task(tmp_path, n_train=8)
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe_dict(tmp_path, train_file)))
    r = load_recipe(path, ["train.lr=1e-4", "method.r=32", "data.max_length=64"])
    assert (r.train.lr, r.method.r, r.data.max_length) == (1e-4, 32, 64)
    with pytest.raises(LaminaError, match=r"\(with train\.lrr=1\): train\.lrr: unknown key"):
        load_recipe(path, ["train.lrr=1"])
    with pytest.raises(LaminaError, match=r"train\.lr: Input should be greater than 0"):
        load_recipe(path, ["train.lr=-1"])
    with pytest.raises(LaminaError, match="an override is KEY=VALUE"):
        load_recipe(path, ["train.lr"])


@pytest.mark.slow  # a real `lamina train` process: 61 s at load 12 on 2 cores
def test_train_to_a_log_prints_progress_lines_and_records_overrides(tiny_random, tmp_path):
    train_file, _ = write_task(tmp_path, n_train=32)
    recipe = tmp_path / "r.yaml"
    d = recipe_dict(tiny_random, train_file, steps=4)
    d["output"] = {"dir": str(tmp_path / "run")}
    recipe.write_text(yaml.safe_dump(d))
    env = {"LAMINA_HOME": str(tmp_path / "home"), "LAMINA_PROGRESS_SECONDS": "0"}
    done = _cli(["train", str(recipe), "train.lr=2e-3", "method.r=8"], env)
    assert done.returncode == 0, done.stderr
    progress = [ln for ln in done.stderr.splitlines() if ln.startswith("t: ")]
    assert [re.match(r"t: (\d)/4 steps", ln).group(1) for ln in progress] == ["1", "2", "3", "4", "4"]
    assert re.search(r"loss \d+\.\d{4}, tokens/s [\d,]+, elapsed \d:\d\d:\d\d, ETA \d:\d\d:\d\d", progress[1])
    # no third-party noise: no tqdm bars ("it/s"), no library warnings
    assert "it/s" not in done.stderr and "Warning" not in done.stderr
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["overrides"] == ["train.lr=2e-3", "method.r=8"]
    saved = yaml.safe_load((tmp_path / "run" / "recipe.yaml").read_text())
    assert (saved["train"]["lr"], saved["method"]["r"]) == (2e-3, 8)


def test_tiny_base_says_what_it_is_before_its_one_time_pretraining(monkeypatch, capsys):
    from lamina.train import tiny_base as tiny

    # a two-step pretraining: the notice and the build are what is tested, not the base's skill
    monkeypatch.setattr(
        tiny, "PRETRAIN", {**tiny.PRETRAIN, "steps": 2, "tokens_per_step": 512, "warmup_steps": 0}
    )
    path = tiny.ensure_tiny_base(progress=True)
    err = capsys.readouterr().err
    assert (path / "config.json").is_file()
    assert "only knows Lamina's bundled ticket task" in err and "model.base" in err
    assert err.index("Building the embedded `tiny` base once") < err.index("pretraining tiny base")
    tiny.ensure_tiny_base(progress=True)  # cached: no second notice
    assert "Building" not in capsys.readouterr().err
