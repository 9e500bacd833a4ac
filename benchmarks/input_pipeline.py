"""Is training input-bound? The engine's training steps per second against a bare loop over preloaded tensors.

    python benchmarks/input_pipeline.py [--steps 40] [--only kvasir,acdc,builtin]

For each setup (Kvasir at 128 px with the U-Net baseline; ACDC slices at 96 px with SNet at its CPU
width; the built-in phantom-ct with the quickstart's SNet), in one process, one after the other:

- *engine*: ``medseg.engine.train.fit`` for ``--steps`` optimizer steps; steps/s from the time between the
  first and the last step (start-up, the pre-flight read that fills the cache, and validation excluded);
- *bare*: the same model, loss, optimizer and batch size in a plain loop over every training sample
  decoded, resized and normalised once and held as tensors (random horizontal flips only);
- *loader*: images per second out of the engine's training DataLoader alone (second pass, cache warm).

Goal (issue "Training on a CPU budget is input-bound"): engine within 1.1x of the bare loop.
Writes ``benchmarks/results/input_pipeline.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_description, write_results  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
RESULTS = Path(__file__).resolve().parent / "results"
# the quickstart SNet (its pinned ViT strides 4/8/16/32, as these results were measured)
SNET_CPU = "model.kwargs={cnn_channels: [16, 16, 32, 64, 128], vit_dims: [16, 32, 64, 128], vit_strides: [4, 8, 16, 32]}"
SETUPS = {
    "kvasir": ("Kvasir-SEG (PraNet train split), unet_kvasir, 128 px, batch 16", "unet_kvasir", SHARED / "kvasir-seg",
               ["data.size=[128,128]", "data.batch_size=16", "data.multiscale=null"]),
    "acdc": ("ACDC slices, snet_acdc at quickstart widths, 96 px, batch 8", "snet_acdc", SHARED / "acdc",
             ["data.size=[96,96]", "data.batch_size=8", SNET_CPU]),
    "builtin": ("built-in phantom-ct, quickstart (SNet 1.0 M), 128 px, batch 8", "quickstart", None, []),
}


class StepClock(Callback):
    """Wall time of every optimizer step's end (validation time removed)."""

    def __init__(self) -> None:
        self.ends: list[float] = []
        self.val = 0.0
        self._v0 = 0.0

    def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
        self.ends.append(time.perf_counter() - self.val)

    def on_validation_start(self, trainer: Any, *args: Any) -> None:
        self._v0 = time.perf_counter()

    def on_validation_end(self, trainer: Any, *args: Any) -> None:
        self.val += time.perf_counter() - self._v0


def engine_steps_per_s(recipe: str, overrides: list[str], steps: int, tmp: Path) -> tuple[float, Any]:
    from medseg.config import load_config
    from medseg.engine.train import fit

    cfg = load_config(recipe, overrides + [f"trainer.max_steps={steps}", "trainer.max_epochs=-1", "trainer.progress=false",
                                           "trainer.overlays=0", "trainer.max_time_s=null"])
    clock = StepClock()
    fit(cfg, out=tmp / f"engine-{recipe}", callbacks=[clock])
    ends = clock.ends[2:]  # the first steps pay for lazy set-up
    return (len(ends) - 1) / (ends[-1] - ends[0]), cfg


def bare_steps_per_s(cfg: Any, steps: int) -> tuple[float, float]:
    """(steps/s of the bare loop, images/s of the engine's loader) for the resolved config ``cfg``."""
    from medseg.engine.datamodule import SegDataModule, prepare_data_root
    from medseg.engine.task import SegTask

    cfg = cfg.model_copy(update={"data": prepare_data_root(cfg.data)})
    dm = SegDataModule(cfg)
    dm.setup("fit")
    dm.preflight()
    loader = torch.utils.data.DataLoader(dm.train_ds, batch_size=cfg.data.batch_size, shuffle=True,
                                         collate_fn=dm.train_dataloader().collate_fn, drop_last=True)
    for _ in loader:  # first pass fills the cache
        pass
    t0, n = time.perf_counter(), 0
    for b in loader:
        n += b["image"].shape[0]
    loader_ips = n / (time.perf_counter() - t0)
    pre = [dm.train_ds._load_pre(*key) for key in dm.train_ds.index]  # decoded, resized, normalised once
    size = tuple(cfg.data.size)  # TransUNet's preset caches slices at their own size (it resizes after the augmentation)
    images = torch.cat([F.interpolate(torch.as_tensor(p["image"]).float()[None], size=size, mode="bilinear")
                        for p in pre])
    labels = torch.cat([F.interpolate(torch.as_tensor(p["label"]).float().reshape(1, 1, *p["image"].shape[-2:]),
                                      size=size, mode="nearest")[:, 0].long() for p in pre])
    task = SegTask(cfg)
    model, crit = task.model, task.criterion
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    model.train()
    bs = cfg.data.batch_size
    g = torch.Generator().manual_seed(0)
    times = []
    for _ in range(steps):
        idx = torch.randint(len(images), (bs,), generator=g)
        x, y = images[idx], labels[idx]
        flip = torch.rand(bs, generator=g) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        y = torch.where(flip[:, None, None], y.flip(-1), y)
        loss, _ = crit(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter())
    times = times[2:]
    return (len(times) - 1) / (times[-1] - times[0]), loader_ips


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--only", default=",".join(SETUPS))
    args = ap.parse_args()
    rows = []
    done = RESULTS / "input_pipeline.json"
    keep = [r for r in (json.loads(done.read_text()) if done.is_file() else [])
            if r.get("key") not in args.only.split(",")]  # rows of setups not re-run this time
    with tempfile.TemporaryDirectory() as tmp:
        for key in args.only.split(","):
            title, recipe, root, extra = SETUPS[key]
            if root is not None and not root.is_dir():
                print(f"skipped {key}: {root} not found")
                continue
            overrides = list(extra) + ([f"data.root={root}", "data.builtin=null"] if root is not None
                                       else [f"data.root={Path(tmp) / 'ct'}"])
            engine, cfg = engine_steps_per_s(recipe, overrides, args.steps, Path(tmp))
            bare, loader_ips = bare_steps_per_s(cfg, args.steps)
            rows.append({"key": key, "date": time.strftime("%Y-%m-%d %H:%M"), "setup": title, "engine_steps_per_s": engine, "bare_steps_per_s": bare,
                         "ratio_bare_over_engine": bare / engine, "loader_images_per_s": loader_ips,
                         "batch": cfg.data.batch_size})
            print(rows[-1], flush=True)
    rows = keep + rows
    lines = ["# Input pipeline: engine vs a bare loop over preloaded tensors", "",
             f"Machine: {machine_description()}", "",
             f"Generated by `python benchmarks/input_pipeline.py --steps {args.steps} [--only KEYS]` (rows of setups not",
             "re-run are kept from the previous file; each row has its time in the .json).",
             "Goal: the engine within 1.1x of the bare loop (ratio <= 1.10).", "",
             "| setup | engine steps/s | bare steps/s | bare / engine | loader images/s (cache warm) |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['setup']} | {r['engine_steps_per_s']:.2f} | {r['bare_steps_per_s']:.2f} | "
              f"{r['ratio_bare_over_engine']:.2f} | {r['loader_images_per_s']:.0f} |" for r in rows]
    write_results("input_pipeline", lines, rows)


if __name__ == "__main__":
    main()
