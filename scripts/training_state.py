"""Carry a training run's resume state across sessions in git-sized pieces.

A run folder (``runs/head64``) holds ``state.safetensors`` (model, EMA and AdamW moments; ~43 MB for
head-64) which is over the repository's 20 MB-per-file limit. ``pack`` splits its tensors by prefix
into shards of at most ``--max-mb`` each under ``training_state/<run>/`` together with the small JSON
files; ``unpack`` merges them back into a run folder that ``diffrecon train-prior --resume`` accepts
and writes the run's EMA prior (``ema_prior.{safetensors,json}``, loadable by ``diffrecon.priors.load``)
from the state, so a state trained elsewhere can be exported without its slice bank.

    python scripts/training_state.py pack runs/head64 training_state/head64
    python scripts/training_state.py unpack training_state/head64 runs/head64
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil

from safetensors.torch import load_file, save_file

SMALL_FILES = ("state.json", "data.json", "ema_prior.json", "log.jsonl")


def pack(run: pathlib.Path, out: pathlib.Path, max_mb: float) -> None:
    tensors = load_file(run / "state.safetensors")
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("state-*.safetensors"):
        old.unlink()
    shards, current, size = [], {}, 0
    for name in sorted(tensors):
        nbytes = tensors[name].numel() * tensors[name].element_size()
        if current and size + nbytes > max_mb * 2**20:
            shards.append(current)
            current, size = {}, 0
        current[name] = tensors[name].contiguous()
        size += nbytes
    shards.append(current)
    for i, shard in enumerate(shards):
        save_file(shard, out / f"state-{i:02d}.safetensors")
    (out / "shards.json").write_text(json.dumps({"n_shards": len(shards), "n_tensors": len(tensors)}) + "\n")
    for f in SMALL_FILES:
        if (run / f).exists():
            shutil.copy2(run / f, out / f)
    print(f"packed {len(tensors)} tensors of {run} into {len(shards)} shards in {out}")


def unpack(packed: pathlib.Path, run: pathlib.Path) -> None:
    info = json.loads((packed / "shards.json").read_text())
    tensors = {}
    for i in range(info["n_shards"]):
        tensors.update(load_file(packed / f"state-{i:02d}.safetensors"))
    if len(tensors) != info["n_tensors"]:
        raise SystemExit(f"expected {info['n_tensors']} tensors, found {len(tensors)}")
    run.mkdir(parents=True, exist_ok=True)
    save_file(tensors, run / "state.safetensors")
    for f in SMALL_FILES:
        if (packed / f).exists():
            shutil.copy2(packed / f, run / f)
    write_ema_prior(run, tensors)
    print(f"restored {run} ({len(tensors)} tensors); resume with: diffrecon train-prior --out {run} --resume")


def write_ema_prior(run: pathlib.Path, tensors: dict | None = None) -> None:
    """Write ``run/ema_prior`` from the EMA tensors of ``run/state.safetensors`` (what a checkpoint of
    ``train-prior`` writes, with the same training record)."""
    from diffrecon.priors.checkpoint import load_state_dict_strict, save_prior
    from diffrecon.priors.train import TrainConfig, build_prior, training_record

    info = json.loads((run / "state.json").read_text())
    cfg = TrainConfig(**info["config"])
    tensors = tensors if tensors is not None else load_file(run / "state.safetensors")
    prior = build_prior(cfg)
    ema = {k[len("ema."):]: v for k, v in tensors.items() if k.startswith("ema.")}
    load_state_dict_strict(prior.network, ema, f"{run}/state.safetensors (EMA)")
    prior.config["training"] = training_record(
        cfg, info.get("step"), info.get("train_seconds", 0.0), info.get("history") or []
    )
    save_prior(prior, run / "ema_prior", overwrite=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("pack")
    a.add_argument("run", type=pathlib.Path)
    a.add_argument("out", type=pathlib.Path)
    a.add_argument("--max-mb", type=float, default=16.0)
    b = sub.add_parser("unpack")
    b.add_argument("packed", type=pathlib.Path)
    b.add_argument("run", type=pathlib.Path)
    args = p.parse_args()
    pack(args.run, args.out, args.max_mb) if args.cmd == "pack" else unpack(args.packed, args.run)


if __name__ == "__main__":
    main()
