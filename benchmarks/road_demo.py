"""ROAD on the demo model (issue 32): Grad-CAM's maps against seeded random maps.

ROAD (Rong et al. 2022, camcli.evaluate.metrics.road_scores, as `camcli evaluate --road` computes it)
on --images held-out generated scenes (make_dataset, seed --seed: never used for training): each
scene's top-1 class, explained by Grad-CAM and by a random map (uniform noise at the model's input
resolution, seeded per scene). A faithful map removes the pixels that matter first: MoRF drops the
score more (lower), LeRF keeps it (higher), and roadcombined = (LeRF - MoRF) / 2 is higher. Prints
the mean of each and the MoRF/LeRF curves at 10%, ..., 90% of the pixels removed.

    python benchmarks/road_demo.py                 # 60 scenes
    python benchmarks/road_demo.py --images 20     # a quick look
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=60, help="held-out scenes (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=5000, help="scene seed (default: %(default)s)")
    parser.add_argument("--model", default="demo", help="demo or demo-cheat (default: %(default)s)")
    args = parser.parse_args(argv)

    import camcli
    from camcli.evaluate.metrics import ROAD_PERCENTILES, road_scores
    from camcli.maps.overlay import upsample
    from camcli.models.demo.scenes import make_dataset

    explainer = camcli.Explainer(camcli.load_model(args.model), method="gradcam", classes=["top1"])
    height, width = explainer.loaded.input_size
    images, _, _ = make_dataset(args.images, args.seed)
    road = {"gradcam": [], "random": []}
    for index, image in enumerate(images):
        [result] = explainer.explain([image])
        class_map = result.maps[0]
        model_input = explainer.preprocess([image])[0]
        maps = {"gradcam": upsample(class_map.heatmap, height=height, width=width),
                "random": np.random.default_rng(args.seed + index).uniform(size=(height, width))}
        for name, saliency in maps.items():
            road[name].append(road_scores(explainer.class_scores, model_input, saliency, class_map.class_index))

    def mean(name, value):
        return float(np.mean([getattr(scores, value) for scores in road[name]]))

    print(f"ROAD on {args.images} held-out scenes, model {args.model}, top-1 class (score change, probability)")
    print(f"{'metric':<14}{'gradcam':>9}{'random':>9}  better")
    for value, better in (("morf", "lower"), ("lerf", "higher"), ("combined", "higher")):
        print(f"{'road' + value:<14}{mean('gradcam', value):>9.3f}{mean('random', value):>9.3f}  {better}")
    print(f"\n{'removed %':<14}" + "".join(f"{p:>7}" for p in ROAD_PERCENTILES))
    for name in road:
        for curve in ("morf", "lerf"):
            values = np.mean([getattr(scores, curve + "_curve") for scores in road[name]], axis=0)
            print(f"{name + ' ' + curve:<14}" + "".join(f"{v:>7.3f}" for v in values))
    ranked = mean("gradcam", "combined") > mean("random", "combined")
    print(f"\ngradcam ranked {'above' if ranked else 'NOT above'} the random map by roadcombined")
    return 0 if ranked else 1


if __name__ == "__main__":
    sys.exit(main())
