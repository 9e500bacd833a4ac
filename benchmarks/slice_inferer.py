"""Volume inference: our batched slice loop (``Predictor.predict_volume``) against MONAI's ``SliceInferer``.

    python benchmarks/slice_inferer.py [--data ../shared/data/acdc] [--repeats 3] [--threads 1]

One ACDC test volume (TransUNet h5), a small random U-Net (``features [8, 8, 16, 16, 32, 8]``) with the
``snet_acdc`` recipe's pre-processing (224 x 224, resize back with labels). Path A is ``predict_volume``;
path B pre-processes the same slices, stacks them to ``[1, C, D, h, w]`` and runs
``monai.inferers.SliceInferer(roi_size=(h, w), sw_batch_size=eval.batch_size, spatial_dim=0)`` with
``Predictor.probabilities`` as the 2D network, then resizes back as A does. Both whole calls, including
pre-processing, are timed interleaved (A, B, A, B, ...) because the CPU is shared; the outputs must agree.
Writes benchmarks/results/slice_inferer.md and .json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_description  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]


def slice_inferer_volume(p: Any, volume: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """``Predictor.predict_volume`` with MONAI's ``SliceInferer`` running the 2D network over the slices."""
    from monai.inferers import SliceInferer

    from medseg.engine.predict import zoom_labels

    slices = [p.as_image(volume[:, z], kind=kind) for z in range(volume.shape[1])]
    x = torch.stack([p.preprocess(s, kind) for s in slices], dim=1)[None]  # [1, C, D, h, w]
    inferer = SliceInferer(roi_size=tuple(x.shape[-2:]), sw_batch_size=p.batch_size, spatial_dim=0,
                           progress=False)
    with torch.inference_mode():  # the network's outputs are inference tensors; MONAI updates them in place
        probs = inferer(x, p.probabilities)[0]  # [K', D, h, w]
    labels, out = [], []
    for z, s in enumerate(slices):
        size = tuple(s.shape[-2:])
        pz = F.interpolate(probs[:, z][None], size=size, mode="bilinear", align_corners=False)
        if p.cfg.eval.resize_back == "labels":
            labels.append(zoom_labels(p.to_labels(probs[:, z][None])[0].cpu().numpy(), size))
        else:
            labels.append(p.to_labels(pz)[0].cpu().numpy())
        out.append(pz[0].cpu().numpy())
    return np.stack(labels), np.stack(out, axis=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "acdc"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from medseg.config import load_config
    from medseg.data.inputs import input_kind
    from medseg.data.readers import build_reader
    from medseg.engine.fast import calibrate_batchnorm
    from medseg.engine.predict import Predictor
    from medseg.models import build_model

    cfg = load_config("snet_acdc", ["model.name=unet", "model.kwargs={features: [8, 8, 16, 16, 32, 8]}",
                                    f"data.root={args.data}"])
    reader = build_reader(cfg.data)
    case = reader.load(reader.ids("test")[0])
    kind = input_kind(case.meta.get("image_path"))
    torch.manual_seed(0)
    model = build_model("unet", cfg.data.in_channels, cfg.data.out_channels,
                        features=[8, 8, 16, 16, 32, 8])
    calibrate_batchnorm(model, torch.rand(2, cfg.data.in_channels, *cfg.data.size))
    p = Predictor(model, cfg)
    a_lab, a_prob = p.predict_volume(case.image, kind=kind)  # warm-up (and the fast path's folding)
    b_lab, b_prob = slice_inferer_volume(p, case.image, kind)
    same_labels = bool((a_lab == b_lab).all())
    max_diff = float(np.abs(a_prob - b_prob).max())
    times: dict[str, list[float]] = {"loop": [], "slice_inferer": []}
    for _ in range(args.repeats):
        for k, f in (("loop", lambda: p.predict_volume(case.image, kind=kind)),
                     ("slice_inferer", lambda: slice_inferer_volume(p, case.image, kind))):
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    ratio = statistics.median(b / a for a, b in zip(times["loop"], times["slice_inferer"]))
    # the batching alone, with a trivial network: our stack-and-call against SliceInferer, 30 interleaved repeats
    x = torch.rand(1, cfg.data.in_channels, case.image.shape[1], *cfg.data.size)
    from monai.inferers import SliceInferer

    inferer = SliceInferer(roi_size=tuple(cfg.data.size), sw_batch_size=p.batch_size, spatial_dim=0, progress=False)
    net = lambda b: torch.softmax(torch.cat([b * a for a in (-1.0, 0.5, 2.0, 1.0)], 1), 1)  # noqa: E731
    bat: dict[str, list[float]] = {"loop": [], "slice_inferer": []}
    with torch.inference_mode():
        for _ in range(30):
            t0 = time.perf_counter()
            for s in range(0, x.shape[2], p.batch_size):
                net(x[0, :, s:s + p.batch_size].transpose(0, 1))
            bat["loop"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            inferer(x, net)
            bat["slice_inferer"].append(time.perf_counter() - t0)
    row = {"case": case.id, "shape": list(case.image.shape), "batch_size": p.batch_size, "size": list(cfg.data.size),
           "same_labels": same_labels, "max_abs_diff_probs": max_diff,
           "s_loop": [round(t, 3) for t in times["loop"]], "s_slice_inferer": [round(t, 3) for t in times["slice_inferer"]],
           "median_s_loop": round(statistics.median(times["loop"]), 3),
           "median_s_slice_inferer": round(statistics.median(times["slice_inferer"]), 3),
           "ratio_slice_inferer_over_loop": round(ratio, 3),
           "batching_only_ms_loop": round(1000 * statistics.median(bat["loop"]), 1),
           "batching_only_ms_slice_inferer": round(1000 * statistics.median(bat["slice_inferer"]), 1)}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "slice_inferer.json").write_text(json.dumps({"machine": machine_description(),
                                                             "threads": args.threads, "row": row}, indent=1))
    lines = ["# Volume inference: batched slice loop vs MONAI SliceInferer", "",
             f"{machine_description()}; {args.threads} torch thread(s); {args.repeats} interleaved repeats; "
             "ratio = median of per-repeat ratios (shared CPU).", "",
             "| case | volume [C, D, H, W] | batch | labels equal | max abs diff probs | s loop (median) | "
             "s SliceInferer (median) | SliceInferer / loop |", "|---|---|---|---|---|---|---|---|",
             f"| {row['case']} | {row['shape']} | {row['batch_size']} | {same_labels} | {max_diff:.1e} | "
             f"{row['median_s_loop']} {row['s_loop']} | {row['median_s_slice_inferer']} {row['s_slice_inferer']} "
             f"| {row['ratio_slice_inferer_over_loop']} |", "",
             f"Batching alone (a trivial network, 30 interleaved repeats, median): loop {row['batching_only_ms_loop']} ms, "
             f"SliceInferer {row['batching_only_ms_slice_inferer']} ms per volume."]
    (RESULTS / "slice_inferer.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
