"""Volume inference: our batched slice loop (``Predictor.predict_volume``) against MONAI's ``SliceInferer``.

    python benchmarks/slice_inferer.py [--data ../shared/data/acdc] [--repeats 3] [--threads 1]

One ACDC test volume (TransUNet h5), a small random U-Net (``features [8, 8, 16, 16, 32, 8]``) with the
``snet_acdc`` recipe's pre-processing (224 x 224, resize back with labels). Path A is the batched slice loop
(the slices through ``predict_images``, what ``predict_volume`` did before); path B is ``predict_volume``
now: the pre-processed slices stacked to ``[1, C, D, h, w]`` and run by
``monai.inferers.SliceInferer(roi_size=(h, w), sw_batch_size=eval.batch_size, spatial_dim=0)`` with
``Predictor.probabilities`` as the 2D network, then resized back as A does. Both whole calls, including
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_description  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]


def loop_volume(p: Any, volume: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """The batched slice loop ``Predictor.predict_volume`` used before SliceInferer: the slices as 2D images."""
    res = p.predict_images([volume[:, z] for z in range(volume.shape[1])], kind=kind)
    return np.stack([r[0] for r in res]), np.stack([r[1] for r in res], axis=1)


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
    a_lab, a_prob = loop_volume(p, case.image, kind)  # warm-up (and the fast path's folding)
    b_lab, b_prob = p.predict_volume(case.image, kind=kind)  # MONAI SliceInferer
    same_labels = bool((a_lab == b_lab).all())
    max_diff = float(np.abs(a_prob - b_prob).max())
    times: dict[str, list[float]] = {"loop": [], "slice_inferer": []}
    for _ in range(args.repeats):
        for k, f in (("loop", lambda: loop_volume(p, case.image, kind)),
                     ("slice_inferer", lambda: p.predict_volume(case.image, kind=kind))):
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    ratio = statistics.median(b / a for a, b in zip(times["loop"], times["slice_inferer"]))
    row = {"case": case.id, "shape": list(case.image.shape), "batch_size": p.batch_size, "size": list(cfg.data.size),
           "same_labels": same_labels, "max_abs_diff_probs": max_diff,
           "s_loop": [round(t, 3) for t in times["loop"]], "s_slice_inferer": [round(t, 3) for t in times["slice_inferer"]],
           "median_s_loop": round(statistics.median(times["loop"]), 3),
           "median_s_slice_inferer": round(statistics.median(times["slice_inferer"]), 3),
           "ratio_slice_inferer_over_loop": round(ratio, 3)}
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
             f"| {row['ratio_slice_inferer_over_loop']} |"]
    (RESULTS / "slice_inferer.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
