"""The cost of `security.encrypt_at_rest`: writing and reading a dataset version's records and a
registered weights file, stored plain and stored encrypted (lamina.governance.at_rest).

Records: a JSONL file of chat records. Write = the file written (plain), or written and then
sealed to `.enc` (encrypted, as intake commits a version); atomic and fsynced either way.
Read = every byte read back and sha256-hashed (the version re-hash before training), then
every line parsed (how training reads a version).
Weights: a safetensors file of random fp16 tensors. Write = `save_file` and fsync (plain), or
`save_file` then `seal_folder` (as `register` stores it). Load = `load_file` and every tensor
copied into preallocated model memory (plain); encrypted either through `plain_view` (decrypt
into a private directory on /dev/shm, load, remove: what every loader does) or decrypted in
memory and given to `safetensors.torch.load(bytes)`.

Each figure is the best of `--repeat` runs, wall-clock seconds, page cache warm (the
encrypted side pays for AES-GCM and, on sealing, sha256; the disk is the same for both).
MB/s is plaintext megabytes (10^6) per second; "added" is encrypted minus plain. CPU only.

    .venv/bin/python bench/encrypt_at_rest.py --weights-gb 0.5 2 --records 200000 --json out.json
    .venv/bin/python bench/encrypt_at_rest.py --smoke
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path


def _fsync(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def row(what: str, nbytes: int, plain: float, enc: float) -> dict:
    mb = nbytes / 1e6
    return {"what": what, "mb": round(mb, 1), "plain_s": round(plain, 3), "encrypted_s": round(enc, 3),
            "plain_mb_s": round(mb / plain, 1), "encrypted_mb_s": round(mb / enc, 1),
            "added_s": round(enc - plain, 3), "ratio": round(enc / plain, 2)}  # fmt: skip


def bench_records(root: Path, n: int, repeat: int) -> list[dict]:
    from lamina import fsio
    from lamina.governance import at_rest

    lines = [json.dumps({"messages": [
        {"role": "user", "content": f"Ticket {i}: order {4000 + i}, the blue kettle arrived broken, lid cracked."},
        {"role": "assistant", "content": f"ORDER={4000 + i}; ITEM=blue kettle; ISSUE=arrived broken"}]}) + "\n"
        for i in range(n)]  # fmt: skip
    text = "".join(lines).encode()
    plain, enc_dir = root / "plain", root / "enc"
    plain.mkdir()
    enc_dir.mkdir()

    def write_plain():
        fsio.write_bytes(plain / "train.jsonl", text)  # atomic and fsynced, as every Lamina write

    def write_enc():
        (enc_dir / "train.jsonl").write_bytes(text)
        at_rest.seal_file(enc_dir / "train.jsonl")

    def read(path):
        def rehash():
            h = hashlib.sha256()
            for block in at_rest.iter_bytes(path):
                h.update(block)
            return h.hexdigest()

        return rehash

    def parse(path):
        return lambda: [json.loads(line) for line in at_rest.iter_lines(path) if line.strip()]

    w_plain, w_enc = best(write_plain, repeat), best(write_enc, repeat)
    assert b"blue kettle" not in (enc_dir / "train.jsonl.enc").read_bytes()
    assert len(parse(enc_dir / "train.jsonl")()) == n
    return [
        row(f"records write ({n} lines)", len(text), w_plain, w_enc),
        row("records read (re-hash)", len(text), best(read(plain / "train.jsonl"), repeat),
            best(read(enc_dir / "train.jsonl"), repeat)),
        row("records read + parse", len(text), best(parse(plain / "train.jsonl"), repeat),
            best(parse(enc_dir / "train.jsonl"), repeat)),
    ]


def bench_weights(root: Path, gb: float, repeat: int) -> list[dict]:
    import torch
    from safetensors.torch import load, load_file, save_file

    from lamina.governance import at_rest, crypto

    n_tensors = 16
    per = int(gb * 1e9 / 2 / n_tensors)  # fp16: 2 bytes an element
    gen = torch.Generator().manual_seed(0)
    tensors = {f"layers.{i}.weight": torch.randn(per, generator=gen, dtype=torch.float32).half()
               for i in range(n_tensors)}  # fmt: skip
    plain, enc = root / f"plain-{gb}", root / f"enc-{gb}"

    def write_plain():
        shutil.rmtree(plain, ignore_errors=True)
        plain.mkdir()
        save_file(tensors, str(plain / "model.safetensors"))
        _fsync(plain / "model.safetensors")  # a registered copy is made durable either way

    def write_enc():
        shutil.rmtree(enc, ignore_errors=True)
        enc.mkdir()
        save_file(tensors, str(enc / "model.safetensors"))
        at_rest.seal_folder(enc)

    w_plain, w_enc = best(write_plain, repeat), best(write_enc, repeat)
    nbytes = (plain / "model.safetensors").stat().st_size
    sealed = enc / "model.safetensors.sealed"
    assert (plain / "model.safetensors").read_bytes()[:64] not in sealed.read_bytes()[:1 << 20]

    # A load ends with every tensor copied into the model's own memory, as from_pretrained does;
    # without the copy a plain load_file only maps the file and reads nothing.
    model = {k: torch.empty_like(t) for k, t in tensors.items()}

    def into_model(state: dict) -> None:
        for k, t in state.items():
            model[k].copy_(t)

    def read_plain():
        into_model(load_file(str(plain / "model.safetensors")))

    def read_view():
        with at_rest.plain_view(enc) as view:
            into_model(load_file(str(view / "model.safetensors")))

    def read_memory():
        folder = at_rest._folder_key(enc)  # what plain_view opens; here without a temp file
        into_model(load(b"".join(crypto.iter_decrypt(sealed, {folder.key_id: folder.key}))))

    r_plain = best(read_plain, repeat)
    read_view()
    assert all(torch.equal(model[k], tensors[k]) for k in tensors)
    return [
        row(f"weights write ({gb} GB)", nbytes, w_plain, w_enc),
        row(f"weights load ({gb} GB), private view", nbytes, r_plain, best(read_view, repeat)),
        row(f"weights load ({gb} GB), in memory", nbytes, r_plain, best(read_memory, repeat)),
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights-gb", type=float, nargs="*", default=[0.5, 2.0])
    p.add_argument("--records", type=int, default=200_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, one repeat: checks the script runs")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()
    if args.smoke:
        args.weights_gb, args.records, args.repeat = [0.01], 2000, 1
    work = Path(tempfile.mkdtemp(prefix="lamina-bench-at-rest-"))
    os.environ["LAMINA_HOME"] = str(work / "home")
    os.environ["LAMINA_CONFIG_DIR"] = str(work / "config")  # a master key of its own, removed after
    try:
        rows = bench_records(work, args.records, args.repeat)
        for gb in args.weights_gb:
            rows += bench_weights(work, gb, args.repeat)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{'what':<40}{'MB':>9}{'plain s':>9}{'enc s':>9}{'plain MB/s':>12}{'enc MB/s':>10}{'added s':>9}")
    for r in rows:
        print(f"{r['what']:<40}{r['mb']:>9}{r['plain_s']:>9}{r['encrypted_s']:>9}{r['plain_mb_s']:>12}"
              f"{r['encrypted_mb_s']:>10}{r['added_s']:>9}")
    if args.json:
        meta = {"machine": platform.node(), "cpus": os.cpu_count(), "load_avg": os.getloadavg()}
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
