"""Weakly supervised segmentation on the demo scenes: mIoU of CAM seeds and their refinements.

1. Two folders of generated scenes with exact pixel masks (`samples --segmentation`): a validation
   split (--val scenes) and a held-out split (--test scenes, at least 500), from different seeds.
2. For each refinement (none, slic, randomwalk, crf) the demo model's gradcam, gradcam++, layercam,
   scorecam and cam maps are scored on the validation split with `evaluate --truth-masks`; each
   (method, refinement) takes the background threshold of its best validation mIoU.
3. The held-out split is scored the same way, and the mIoU at the validation's threshold printed.
   The refinements do not use the threshold (crf's unary has a fixed background score), so the
   held-out sweep holds that figure.
4. The cost of each refinement per 224 px image, on 2 cores: one map (the scenes hold one object),
   timed on 50 scenes' gradcam maps.

    python benchmarks/segmentation.py               # about 15 minutes on 2 cores (100 + 500 scenes)
    python benchmarks/segmentation.py --val 60 --test 500 --skip crf
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

METHODS = ("gradcam", "gradcam++", "layercam", "scorecam", "cam")
VAL_SEED, TEST_SEED, COST_SEED = 8101, 8202, 8303


def evaluate(images: Path, methods, refine: str, bg_threshold: float | None = None) -> dict:
    import camcli

    report = camcli.evaluate_paths([images / "images"], truth_masks=images / "masks", model="demo",
                                   methods=list(methods), refine=refine, bg_threshold=bg_threshold, out=None,
                                   batch_size=32)
    return report.methods


def at_threshold(summary: dict, threshold: float) -> float:
    return next(entry["miou"] for entry in summary["bg_sweep"] if entry["bg_threshold"] == threshold)


def refinement_costs(count: int = 50) -> dict[str, float]:
    """Median milliseconds of each refinement on one gradcam map of a 224 px scene."""
    from camcli import Explainer, load_model
    from camcli.maps.overlay import upsample
    from camcli.maps.refine import REFINEMENTS, refine
    from camcli.maps.segmentation import normalise_maps
    from camcli.models.demo.scenes import make_scene

    explainer = Explainer(load_model("demo"), method="gradcam")
    rng = np.random.default_rng(COST_SEED)
    scenes = [make_scene(rng, size=224).image for _ in range(count)]
    maps = [normalise_maps(upsample(result.maps[0].heatmap, height=224, width=224)[None])
            for result in explainer.explain(scenes)]
    costs = {}
    for how in REFINEMENTS:
        refine(maps[0], scenes[0], how)  # imports and first-call set-up are not the per-image cost
        times = []
        for image_maps, image in zip(maps, scenes):
            start = time.perf_counter()
            refine(image_maps, image, how)
            times.append(1000 * (time.perf_counter() - start))
        costs[how] = statistics.median(times)
    return costs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--val", type=int, default=100, help="validation scenes (default 100)")
    parser.add_argument("--test", type=int, default=500, help="held-out scenes (default 500)")
    parser.add_argument("--skip", action="append", default=[], help="a refinement to leave out (repeatable)")
    args = parser.parse_args(argv)
    from camcli.maps.refine import REFINEMENTS
    from camcli.models.demo.samples import write_segmentation_samples

    refinements = [how for how in REFINEMENTS if how not in args.skip]
    with tempfile.TemporaryDirectory() as tmp:
        val, test = Path(tmp) / "val", Path(tmp) / "test"
        write_segmentation_samples(val, count=args.val, seed=VAL_SEED)
        write_segmentation_samples(test, count=args.test, seed=TEST_SEED)
        print(f"demo scenes: {args.val} validation (seed {VAL_SEED}), {args.test} held out (seed {TEST_SEED}); "
              "model demo at conv6; mIoU with the background, VOC protocol (truth classes' maps)\n")
        results: dict[tuple[str, str], tuple[float, float, float]] = {}
        for how in refinements:
            start = time.perf_counter()
            chosen = {name: summary["best_bg_threshold"] for name, summary in evaluate(val, METHODS, how).items()}
            held_out = evaluate(test, METHODS, how)
            for name in METHODS:
                results[(name, how)] = (chosen[name], at_threshold(held_out[name], chosen[name]),
                                        held_out[name]["best_miou"])
            print(f"  {how}: {time.perf_counter() - start:.0f} s", flush=True)
    print("\nheld-out mIoU at the validation's background threshold (threshold in brackets)")
    print(f"{'method':<10}" + "".join(f"{how:>18}" for how in refinements))
    for name in METHODS:
        cells = "".join(f"{results[(name, how)][1]:>11.3f} ({results[(name, how)][0]:.2f})" for how in refinements)
        print(f"{name:<10}{cells}")
    raw = results[("gradcam", "none")][1] if "none" in refinements else None
    best_key = max(results, key=lambda key: results[key][1])
    best = results[best_key][1]
    best_refined = max((value[1], key) for key, value in results.items() if key[1] != "none")
    print(f"\nraw gradcam seeds: {raw:.3f}" if raw is not None else "")
    print(f"best refinement: {best_refined[1][0]} + {best_refined[1][1]} {best_refined[0]:.3f}"
          + (f" ({best_refined[0] - raw:+.3f} over raw gradcam; target +0.10)" if raw is not None else ""))
    print(f"best method and refinement: {best_key[0]} + {best_key[1]} {best:.3f} (target 0.70)")
    if "none" in refinements:
        print(f"gradcam's validation threshold without refinement: {results[('gradcam', 'none')][0]:.2f} "
              "(the default --bg-threshold)")
    print("\nrefinement cost per 224 px image (one map, median of 50, ms; target <= 50 for slic and randomwalk)")
    for how, ms in refinement_costs().items():
        print(f"  {how:<11}{ms:8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
