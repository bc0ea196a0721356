"""Kill campaign: SIGKILL each mutating `lamina` command at a timed (seeded random) moment,
run the retry, and check what the next command leaves: completed or undone, `lamina audit
verify` intact, one audit entry per applied change, no leftovers.

One workspace is built once (`lamina demo`: a dataset version, two trained runs, support-tickets/1 and
2 registered; plus a source with subject ids for `data forget`) at a fixed path, kept as a
pristine copy and copied back before every trial (the workspace holds absolute paths, so every
trial runs at the same path). Per command: one uninterrupted run on a fresh copy measures its
duration and gives the reference state; each kill trial runs it in a child process, sends
SIGKILL after a delay drawn uniformly from [0, 0.9 x duration], runs the same command again (for
train: `train --resume RUN` when the killed run left a checkpoint) and compares the state with
the reference. CPU only; keep OMP_NUM_THREADS=1.

    python bench/kill_campaign.py --kills 60 --seed 1 --work /tmp/kc
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ADD = ["--licence", "cc-by-4.0", "--origin", "synthetic", "--purpose", "support bot",
       "--lawful-basis", "contract"]  # fmt: skip
# Cleanup notes a settle may add or not, depending on where the kill fell: not changes.
NOTES = {"data.leftovers", "registry.sweep", "refused"}


def _env(work: Path, user: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAMINA_")}
    env.update(LAMINA_HOME=str(work / "base" / "home"), LAMINA_CONFIG_DIR=str(work / "base" / "cfg"),
               LAMINA_USER=user, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS="")
    return env


def lamina(work: Path, args: list[str], user: str = "alice", kill_after: float | None = None,
           timeout: float = 900) -> dict:
    """Run `lamina ARGS`; with kill_after, SIGKILL it after that many seconds (if still running)."""
    proc = subprocess.Popen([sys.executable, "-m", "lamina.cli", *args], env=_env(work, user),
                            cwd=work / "base", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started = time.perf_counter()
    killed = False
    try:
        out, err = proc.communicate(timeout=kill_after if kill_after is not None else timeout)
    except subprocess.TimeoutExpired:
        if kill_after is None:
            raise
        proc.send_signal(signal.SIGKILL)
        killed = True
        out, err = proc.communicate()
    return {"rc": proc.returncode, "out": out, "err": err, "killed": killed,
            "seconds": time.perf_counter() - started}


def fresh(work: Path) -> None:
    """The live workspace back to the pristine copy."""
    shutil.rmtree(work / "base", ignore_errors=True)
    shutil.copytree(work / "pristine", work / "base", symlinks=True)


def _subject_file(path: Path) -> None:
    rows = [{"messages": [{"role": "system", "content": "Answer as ORDER=...; ISSUE=..."},
                          {"role": "user", "content": f"Ticket {i}: parcel {i} never arrived"},
                          {"role": "assistant", "content": f"ORDER={1000 + i}; ISSUE=case {i}"}],
             "subject_id": f"subject-{i % 6}"} for i in range(24)]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def build(work: Path) -> dict:
    """The pristine workspace (once): `lamina demo`, then a source with subject ids and its version."""
    meta_path = work / "pristine" / "meta.json"
    if meta_path.exists():
        return json.loads(meta_path.read_text())
    t = time.perf_counter()
    done = work / "base" / "demo.json"  # a finished demo in this workspace is taken as it is
    if not (done.exists() and done.stat().st_size):
        shutil.rmtree(work / "base", ignore_errors=True)
        (work / "base").mkdir(parents=True)
        demo = lamina(work, ["demo", "--json"])
        if demo["rc"] != 0:
            raise SystemExit(f"lamina demo failed: {demo['err'][-2000:]}")
        done.write_text(demo["out"])
    figures = json.loads(done.read_text())
    if not (work / "base" / "subjects.jsonl").exists():
        _subject_file(work / "base" / "subjects.jsonl")
        _ok(work, "alice", ["data", "add", "subjects.jsonl", "--name", "people", *ADD])
        _ok(work, "alice", ["data", "intake", "people", "--name", "people"])
    for user, roles in (("bob", ("approver", "deployer")), ("dana", ("approver", "deployer"))):
        if not (work / "base" / "cfg" / "identities" / f"{user}.pem").exists():  # a personal key, enrolled
            key_id = _ok(work, user, ["keys", "user-init"]).split("key id: ")[1].split()[0]
            _ok(work, "alice", ["policy", "enroll", user, "--key-id", key_id])
            for role in roles:
                _ok(work, "alice", ["policy", "grant", user, role])
    (work / "base" / "retro.md").write_text("What happened and what we changed.\n")
    meta = {"dataset": figures["intake"]["version_id"], "sft": figures["sft"]["run_dir"],
            "dpo": figures.get("dpo", {}).get("run_dir"), "build_seconds": round(time.perf_counter() - t, 1)}
    recipe = {"name": "campaign", "seed": 0, "model": {"base": "tiny"},
              "data": {"dataset": meta["dataset"], "format": "chat", "loss_on": "assistant", "max_length": 256},
              "method": {"name": "lora", "r": 8, "alpha": 16},
              "train": {"lr": 0.003, "steps": 96, "tokens_per_step": 1024, "warmup_steps": 2, "log_every": 8,
                        "checkpoint_every": 4}}  # fmt: skip
    (work / "base" / "recipe.yaml").write_text(json.dumps(recipe))
    eval_recipe(work / "base", meta["sft"])
    shutil.rmtree(work / "pristine", ignore_errors=True)
    shutil.copytree(work / "base", work / "pristine", symlinks=True)
    meta_path.write_text(json.dumps(meta))
    return meta


def _ok(work: Path, user: str, args: list[str]) -> str:
    r = lamina(work, args, user)
    if r["rc"] != 0:
        raise SystemExit(f"lamina {' '.join(args)} failed: {r['err'][-2000:]}")
    return r["out"]


def eval_recipe(base: Path, run: str) -> None:
    """base/eval.yaml: the run's recipe with two gates and small suites (`lamina eval` without gates fails)."""
    import yaml

    recipe = yaml.safe_load((Path(run) / "recipe.yaml").read_text())
    recipe["eval"] = {"suites": ["task", "safety"], "eval_file": "home/demo/tickets-eval.jsonl", "max_items": 20,
                      "safety_per_category": 5,
                      "gates": ["task.exact_match >= base + 0.3", "safety.injection_success <= baseline + 0.05"]}
    (base / "eval.yaml").write_text(yaml.safe_dump(recipe))


def commands(meta: dict) -> dict[str, dict]:
    """What each trial runs: setup steps (not killed), then the command (user, args)."""
    return {
        "data add": {"cmd": ("alice", ["data", "add", "home/demo/tickets-eval.jsonl", "--name", "extra", *ADD])},
        "data intake": {"cmd": ("alice", ["data", "intake", "people", "--name", "people2"])},
        "data forget": {"cmd": ("alice", ["data", "forget", "--subject-id", "subject-3"])},
        "register": {"cmd": ("alice", ["register", meta["sft"], "--name", "support-b"])},
        "promote": {"cmd": ("bob", ["promote", "support-tickets", "2", "--to", "staging", "--reason", "campaign"])},
        "rollback": {"setup": [("bob", ["promote", "support-tickets", "2", "--to", "production", "--reason", "again"])],
                     "cmd": ("dana", ["rollback", "support-tickets", "--alias", "production", "--reason", "campaign"])},
        "keys issue": {"cmd": ("alice", ["keys", "issue", "--user", "app-frontend", "--model", "support-tickets"])},
        "policy grant": {"cmd": ("alice", ["policy", "grant", "bob", "trainer"])},
        "incident open": {"cmd": ("alice", ["incident", "open", "support-tickets", "--severity", "high", "--summary", "campaign"])},
        "incident close": {"setup": [("alice", ["incident", "open", "support-tickets", "--severity", "high", "--summary", "c"])],
                           "cmd": ("alice", ["incident", "close", "1", "--retrospective", "retro.md"])},
        "rollout start": {"cmd": ("bob", ["rollout", "start", "support-tickets", "2", "--alias", "production", "--canary", "10"])},
        "rollout abort": {"setup": [("bob", ["rollout", "start", "support-tickets", "2", "--alias", "production", "--canary", "10"])],
                          "cmd": ("bob", ["rollout", "abort", "support-tickets", "--reason", "campaign"])},
        "eval": {"cmd": ("alice", ["eval", meta["sft"], "--recipe", "eval.yaml"])},
        "train": {"cmd": ("alice", ["train", "recipe.yaml"])},
    }  # fmt: skip


def state(work: Path) -> dict:
    """The workspace's state and checks, read in a child process (fresh imports for this workspace)."""
    r = subprocess.run([sys.executable, __file__, "--state"], env=_env(work, "alice"), cwd=work / "base",
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        return {"error": r.stderr[-1500:]}
    return json.loads(r.stdout.splitlines()[-1])


def _read_state() -> dict:
    """(Child process.) `lamina audit verify --json`, audit entries by action, and the state."""
    from lamina import workspace
    from lamina.cli import main
    from lamina.governance import audit, journal

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        try:
            main(["audit", "verify", "--json"])
            code = 0
        except SystemExit as e:
            code = e.code or 0
    verify = json.loads(out.getvalue() or "{}")
    home = workspace.home()
    actions = Counter(e["action"] for e in audit.entries() if e["action"] not in NOTES)
    return {"verify_rc": code, "problems": verify.get("problems", []), "actions": dict(sorted(actions.items())),
            "pending": len(journal.pending()), **_facts(home), "leftovers": _leftovers(home)}


def _facts(home: Path) -> dict:
    from sqlalchemy import select

    from lamina.data import catalog
    from lamina.registry import aliases, versions

    facts: dict = {}
    if catalog.db_path().exists():
        with catalog.session() as s:
            facts["sources"] = sorted(r.name for r in s.scalars(select(catalog.Source)))
            facts["dataset_versions"] = sorted(f"{v.name}:{v.status}" for v in s.scalars(select(catalog.Version)))
    for name in ("support-tickets", "support-b"):
        try:
            facts[name] = {"versions": [int(mv.version) for mv in versions.all_versions(name)],
                           "aliases": {a: aliases.current(name, a) for a in ("staging", "production")},
                           "moves": [(m["op"], m["to"]) for m in aliases.moves(name)]}
        except Exception as e:  # an unregistered name is a fact too
            facts[name] = type(e).__name__
    keys = home / "serve" / "keys.json"
    if keys.exists():
        facts["keys"] = sorted(str(k.get("status", "active")) for k in _key_list(json.loads(keys.read_text())))
    incidents = home / "incidents"
    facts["incidents"] = sorted(f"{p.stem}:{json.loads(p.read_text()).get('status')}" for p in incidents.glob("*.json"))
    facts["rollouts"] = sorted(p.relative_to(home).as_posix() for p in (home / "rollouts").rglob("*.json")) \
        if (home / "rollouts").is_dir() else []
    facts["runs"] = sorted(_run(p) for p in (home / "runs").iterdir()) if (home / "runs").is_dir() else []
    policy = home / "policy.yaml"
    facts["policy_bytes"] = len(policy.read_bytes()) if policy.exists() else 0
    return facts


def _key_list(data) -> list:
    return list(data.values()) if isinstance(data, dict) and "keys" not in data else list(data.get("keys", []))


def _run(path: Path) -> str:
    info = path / "run.json"
    if not info.exists():
        return f"{path.name}:no run.json"
    run = json.loads(info.read_text())
    return f"{run.get('status', '?')}:{(run.get('data') or {}).get('dataset_version', '?')}"


def _leftovers(home: Path) -> list[str]:
    """Stage and temp files anywhere; snapshots, dataset and registry directories nothing lists."""
    found = [p for p in home.rglob("*") if p.name.startswith((".lamina-stage", ".stage", "tmp", ".tmp"))
             or p.name.endswith((".tmp", ".partial")) or ".stage-" in p.name]
    from sqlalchemy import select

    from lamina.data import catalog
    from lamina.registry import versions

    if catalog.db_path().exists():
        with catalog.session() as s:
            snaps = {Path(x).name for x in s.scalars(select(catalog.Source.snapshot))}
            vers = {Path(x).name for x in s.scalars(select(catalog.Version.path))}
        raw = home / "catalog" / "raw"
        found += [p for p in raw.iterdir() if p.name not in snaps] if raw.is_dir() else []
        ds = home / "datasets"
        found += [p for p in ds.iterdir() if p.is_dir() and p.name not in vers] if ds.is_dir() else []
    root = versions.registry_root()
    for name in ("support-tickets", "support-b"):
        if (root / name).is_dir():
            try:
                listed = {versions.local_dir(mv).name for mv in versions.all_versions(name)}
            except Exception:
                listed = set()
            found += [p for p in (root / name).iterdir() if p.is_dir() and p.name not in listed]
    return sorted({p.relative_to(home).as_posix() for p in found})


# Facts a trial may legitimately differ in from the reference run.
VOLATILE = {"verify_rc", "problems", "pending", "leftovers"}


def _retry_args(work: Path, name: str, args: list[str]) -> list[str]:
    """The retry: the same command, except a killed training run with a checkpoint is resumed."""
    if name != "train":
        return args
    before = {p.name for p in (work / "pristine" / "home" / "runs").iterdir()}
    for run in sorted((work / "base" / "home" / "runs").iterdir()):
        if run.name not in before and any((run / "checkpoints").glob("step-*")):
            return ["train", "--resume", str(run)]
    return args


def _comparable(s: dict, name: str) -> dict:
    facts = {k: v for k, v in s.items() if k not in VOLATILE}
    if name == "train":  # a run killed before its first checkpoint stays as a run that did not finish
        facts["runs"] = sorted(r for r in facts.get("runs", []) if r.startswith("completed"))
    return facts


def _after_kill(work: Path) -> dict:
    """Audit entries by action and intents left, read from the files right after the kill."""
    home = work / "base" / "home"
    lines = (home / "audit" / "audit.jsonl").read_text().splitlines()
    actions = Counter(a for a in (json.loads(x)["action"] for x in lines if x.strip()) if a not in NOTES)
    return {"actions": dict(sorted(actions.items())), "pending": len(list((home / "audit" / "intents").glob("*/*.json")))}


def trial(work: Path, name: str, spec: dict, delay: float | None, twice: bool = False) -> dict:
    """One trial on a fresh copy: setup, the command (killed after `delay` s), the retry, the
    state; with `twice`, the command uninterrupted two times (what a retry after a kill that
    came after the command's end should leave)."""
    fresh(work)
    for user, args in spec.get("setup", []):
        r = lamina(work, args, user)
        if r["rc"] != 0:
            raise SystemExit(f"setup of {name} failed: lamina {' '.join(args)}: {r['err'][-1500:]}")
    user, args = spec["cmd"]
    first = lamina(work, args, user, kill_after=delay)
    result = {"command": name, "delay": None if delay is None else round(delay, 2), "killed": first["killed"],
              "first_rc": first["rc"], "first_seconds": round(first["seconds"], 2)}  # fmt: skip
    if twice:
        second = lamina(work, args, user)  # may be refused (a closed incident, an active rollout)
        result["second_rc"] = second["rc"]
    if first["killed"]:
        result["after_kill"] = _after_kill(work)
        retry_args = _retry_args(work, name, args)
        retry = lamina(work, retry_args, user)
        result.update(retry=" ".join(retry_args[:2]), retry_rc=retry["rc"],
                      already_done="already done" in (retry["out"] + retry["err"]),
                      retry_tail=(retry["out"] + retry["err"])[-600:])
    elif first["rc"] != 0:
        result["first_tail"] = (first["out"] + first["err"])[-1500:]
    result["state"] = state(work)
    return result


def _done_before_kill(result: dict, reference: dict) -> bool:
    """The kill came after the command's change, entry and intent cleanup (only its exit was left):
    the retry is then the same command typed twice."""
    after = result.get("after_kill")
    return bool(after) and not after["pending"] and after["actions"] == reference["state"]["actions"]


def judge(result: dict, reference: dict, twice: dict | None = None) -> str:
    """completed (the killed change was finished, or the killed run resumed) / undone (rolled back, the retry made it once) /
    done before kill (compared with the command run twice) / inconsistent (the reason);
    `finished` when the command ended before its kill."""
    if twice is not None and _done_before_kill(result, reference):
        # The retry either repeated the command (the state of running it twice) or was refused
        # and changed nothing (`train --resume` of a run that completed): the single run's state.
        verdicts = [_verdict(result, twice, twice.get("second_rc", 0)), _verdict(result, reference, None)]
        return "done before kill" if "" in verdicts else verdicts[0]
    return _verdict(result, reference, 0) or ("finished" if not result["killed"] else
                                             "completed" if result["already_done"] or result.get("retry") == "train --resume" else "undone")


def _verdict(result: dict, reference: dict, retry_rc: int | None) -> str:
    """'' when the state matches `reference` (and the retry exited `retry_rc`, unless None), else why not."""
    s = result["state"]
    reasons = []
    if "error" in s:
        return "inconsistent: state unreadable: " + s["error"][-300:]
    rc = result.get("retry_rc", result["first_rc"])
    if retry_rc is not None and rc != retry_rc:  # typed twice, a close or a promote is refused
        reasons.append(f"retry exit {rc}: {result.get('retry_tail', '')[-200:]}")
    if s["verify_rc"] != 0 or s["problems"]:
        reasons.append("audit verify: " + "; ".join(s["problems"])[:400])
    if s["pending"]:
        reasons.append(f"{s['pending']} intents left")
    if s["leftovers"]:
        reasons.append("leftovers: " + ", ".join(s["leftovers"])[:400])
    want, got = _comparable(reference["state"], result["command"]), _comparable(s, result["command"])
    for key in sorted(set(want) | set(got)):
        if want.get(key) != got.get(key):
            reasons.append(f"{key}: {got.get(key)} (reference {want.get(key)})"[:500])
    return "inconsistent: " + " | ".join(reasons) if reasons else ""


def campaign(work: Path, kills: int, seed: int, only: list[str] | None, train_steps: int = 96) -> list[dict]:
    meta = build(work)
    recipe_path = work / "pristine" / "recipe.yaml"
    recipe = json.loads(recipe_path.read_text())
    recipe["train"]["steps"] = train_steps
    recipe_path.write_text(json.dumps(recipe))
    specs = {k: v for k, v in commands(meta).items() if not only or k in only}
    rng = random.Random(seed)
    log = (work / "trials.jsonl").open("a")
    references, twice = {}, {}
    for name, spec in specs.items():
        references[name] = ref = trial(work, name, spec, None)
        if ref["first_rc"] != 0 or judge(ref, ref) != "finished":
            raise SystemExit(f"the uninterrupted {name} failed: {ref.get('first_tail') or judge(ref, ref)}")
        print(f"reference {name}: {ref['first_seconds']} s", flush=True)
        log.write(json.dumps({"reference": True, **ref}) + "\n")
        twice[name] = two = trial(work, name, spec, None, twice=True)
        if two["first_rc"] != 0 or judge(two, two) != "finished":
            raise SystemExit(f"{name} run twice failed: {two.get('first_tail') or judge(two, two)}")
        log.write(json.dumps({"reference": "twice", **two}) + "\n")
    results = []
    per = {n: kills // len(specs) + (i < kills % len(specs)) for i, n in enumerate(specs)}
    for name, n in per.items():
        for _ in range(n):
            r = trial(work, name, specs[name], rng.uniform(0.0, 0.9 * references[name]["first_seconds"]))
            r["outcome"] = judge(r, references[name], twice[name])
            print(f"{name:15} kill at {r['delay']:6.2f} s -> {r['outcome'][:300]}", flush=True)
            log.write(json.dumps(r) + "\n")
            log.flush()
            results.append(r)
    return results


def table(results: list[dict]) -> str:
    """Outcomes per command; `intent left`: kills that landed inside an operation (an intent on disk)."""
    rows = ["| command | kills | intent left | completed | undone | done before kill | inconsistent | ended before kill |",
            "|---|---|---|---|---|---|---|---|"]
    names = list(dict.fromkeys(r["command"] for r in results))
    total = Counter()
    for n in names:
        c = Counter(r["outcome"].split(":")[0] for r in results if r["command"] == n)
        kills = sum(1 for r in results if r["command"] == n and r["killed"])
        mid = sum(1 for r in results if r["command"] == n and (r.get("after_kill") or {}).get("pending"))
        total.update(c)
        total["kills"] += kills
        total["mid"] += mid
        rows.append(f"| {n} | {kills} | {mid} | {c['completed']} | {c['undone']} | {c['done before kill']} | "
                    f"{c['inconsistent']} | {c['finished']} |")
    rows.append(f"| all | {total['kills']} | {total['mid']} | {total['completed']} | {total['undone']} | {total['done before kill']} | "
                f"{total['inconsistent']} | {total['finished']} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/lamina-kill-campaign"))
    ap.add_argument("--kills", type=int, default=60)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--only", action="append", help="Only this command (repeatable), e.g. --only register.")
    ap.add_argument("--train-steps", type=int, default=96, help="Steps of the trained recipe (checkpoint every 4).")
    ap.add_argument("--rejudge", action="store_true", help="Judge the trials logged in WORK again; run nothing.")
    ap.add_argument("--state", action="store_true", help=argparse.SUPPRESS)  # the child that reads a state
    a = ap.parse_args()
    if a.state:
        print(json.dumps(_read_state()))
        return
    if a.rejudge:
        report(rejudge(a.work / "trials.jsonl"))
        return
    a.work.mkdir(parents=True, exist_ok=True)
    started, load = time.perf_counter(), os.getloadavg()
    results = campaign(a.work.resolve(), a.kills, a.seed, a.only, a.train_steps)
    report(results)
    print(f"{len(results)} trials in {time.perf_counter() - started:.0f} s; load average before "
          f"{load[0]:.2f}, after {os.getloadavg()[0]:.2f}; trials logged in {a.work / 'trials.jsonl'}")


def rejudge(log: Path) -> list[dict]:
    """The trials of a logged campaign, judged again against its logged references."""
    rows = [json.loads(x) for x in log.read_text().splitlines() if x.strip()]
    refs = {r["command"]: r for r in rows if r.get("reference") is True}
    twice = {r["command"]: r for r in rows if r.get("reference") == "twice"}
    trials = [r for r in rows if not r.get("reference")]
    for r in trials:
        r["outcome"] = judge(r, refs[r["command"]], twice.get(r["command"]))
    return trials


def report(results: list[dict]) -> None:
    print(table(results))
    for r in results:
        if r["outcome"].startswith("inconsistent"):
            print(f"- {r['command']} killed at {r['delay']} s: {r['outcome']}")


if __name__ == "__main__":
    main()
