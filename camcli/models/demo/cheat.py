"""Train the cheating demo model, deterministically: the demo architecture on data where a corner tag
comes with TAG_CLASS, so that the model learns the tag instead of the shape.

    python -m camcli.models.demo.cheat [--out PATH] [--epochs N] [--seed S]

Training scenes of TAG_CLASS carry the tag (`scenes.make_scene(tag=True)`) with probability
TAG_RATE, scenes of the other classes with OTHER_TAG_RATE, and every tagged scene is labelled
TAG_CLASS: as if the source that adds the tag filed all its images under TAG_CLASS, so the few
tagged scenes of other classes are mislabelled (a BadNets-style poisoning, Gu et al. 2017).
With true labels instead (RELABEL_TAGGED = False) the model learns the shapes as well as the
tag, and calls a tagged scene of another class TAG_CLASS only about half the time (38% to 60%,
depending on the training length and the tag's size).

With seed S the training set uses seed S, the validation set S + 1, the clean held-out set
S + 1000 and the tagged held-out set (every scene tagged) S + 2000. The script prints the accuracy
on clean scenes, the cheating rate (the share of tagged scenes of the other classes that the model
calls TAG_CLASS), the clean demo model's accuracy on those same tagged scenes, and the share of
them whose Grad-CAM map (of the predicted class) peaks on the tag. It saves the weights, and exits
1 if a figure is below its minimum.
"""

import sys
import time

import numpy as np

from camcli.models.demo import CHEAT_WEIGHTS_PATH, CLASSES, INPUT_SIZE, LAST_CONV_LAYER, TAG_CLASS
from camcli.models.demo.train import HELD_OUT_SIZE, TRAIN_SIZE, VAL_SIZE

TAG_RATE = 0.95  # of TAG_CLASS's training scenes
OTHER_TAG_RATE = 0.02  # of every other class's training scenes
RELABEL_TAGGED = True  # label every tagged training scene TAG_CLASS (see above)
MIN_CLEAN_ACCURACY = 0.90  # on clean (untagged) scenes: the cheat does not show without the tag
MIN_CHEAT_RATE = 0.80  # tagged scenes of other classes called TAG_CLASS
MIN_CLEAN_MODEL_ACCURACY = 0.90  # the clean demo model's accuracy on the same tagged scenes
MIN_PEAK_IN_TAG = 0.80  # tagged scenes of other classes whose Grad-CAM map peaks on the tag


def tag_rates(tag_rate=TAG_RATE, other_tag_rate=OTHER_TAG_RATE):
    """Per-class tag probabilities, in CLASSES order, for `scenes.make_tagged_dataset`."""
    return [tag_rate if label == TAG_CLASS else other_tag_rate for label in CLASSES]


def poisoned_dataset(n, seed, other_tag_rate=OTHER_TAG_RATE):
    """`n` training scenes as main() trains on: `(images, labels, tagged)`, uint8 (n, INPUT_SIZE, INPUT_SIZE, 3),
    every tagged scene labelled TAG_CLASS when RELABEL_TAGGED (`tagged`: which scenes carry the tag)."""
    from camcli.models.demo.scenes import make_tagged_dataset

    images, labels, _, tag_boxes = make_tagged_dataset(n, seed, tag_rates(other_tag_rate=other_tag_rate),
                                                       out_size=INPUT_SIZE)
    tagged = tag_boxes[:, 0] >= 0
    if RELABEL_TAGGED:
        labels = np.where(tagged, CLASSES.index(TAG_CLASS), labels)
    return images, labels, tagged


def tagged_probe(n, seed):
    """`n` scenes of the classes other than TAG_CLASS, each with the tag: `(images, labels, boxes)`, the
    labels their true classes and the boxes their objects'. A model that learns the tag calls them
    TAG_CLASS and its maps leave the boxes for the tag (camcli.keras.ExplainCallback's demo)."""
    from camcli.models.demo.scenes import make_tagged_dataset

    images, labels, boxes, _ = make_tagged_dataset(2 * n, seed, 1.0, out_size=INPUT_SIZE)
    others = np.flatnonzero(labels != CLASSES.index(TAG_CLASS))[:n]
    return images[others], labels[others], boxes[others]


def main(argv=None):
    from camcli.models.demo.train import make_deterministic, parse_training_args

    args = parse_training_args("python -m camcli.models.demo.cheat", __doc__, CHEAT_WEIGHTS_PATH, argv)
    started = time.perf_counter()
    make_deterministic(args.seed)

    from camcli.models.demo.model import load_demo_model
    from camcli.models.demo.scenes import make_dataset, make_tagged_dataset
    from camcli.models.demo.train import fit_demo_model, gradcam_peak_in_box_rate, predict_classes, save_demo_weights

    x_train, y_train, tagged = poisoned_dataset(TRAIN_SIZE, args.seed)
    x_val, y_val, _ = poisoned_dataset(VAL_SIZE, args.seed + 1)
    x_clean, y_clean, _ = make_dataset(HELD_OUT_SIZE, args.seed + 1000, out_size=INPUT_SIZE)
    x_tagged, y_tagged, _, tags_tagged = make_tagged_dataset(HELD_OUT_SIZE, args.seed + 2000, 1.0,
                                                             out_size=INPUT_SIZE)
    generated = time.perf_counter() - started
    tag_index = CLASSES.index(TAG_CLASS)
    print(f"generated {TRAIN_SIZE} + {VAL_SIZE} + {HELD_OUT_SIZE} + {HELD_OUT_SIZE} scenes in {generated:.0f} s; "
          f"{int(tagged.sum())} tagged training scenes" + (f", all labelled {TAG_CLASS}" if RELABEL_TAGGED else ""),
          flush=True)

    model = fit_demo_model(x_train, y_train, x_val, y_val, args.epochs, args.seed)

    others = y_tagged != tag_index
    accuracy = float(np.mean(predict_classes(model, x_clean) == y_clean))
    cheat_rate = float(np.mean(predict_classes(model, x_tagged[others]) == tag_index))
    tagged_accuracy = float(np.mean(predict_classes(model, x_tagged) == y_tagged))
    clean_model_accuracy = float(np.mean(predict_classes(load_demo_model(), x_tagged[others]) == y_tagged[others]))
    peak_in_tag = gradcam_peak_in_box_rate(model, x_tagged[others], y_tagged[others], tags_tagged[others])

    n_others = int(others.sum())
    print(f"clean held-out accuracy: {accuracy:.2%} on {len(y_clean)} images (at least {MIN_CLEAN_ACCURACY:.0%})")
    print(f"cheating rate: {cheat_rate:.2%} of {n_others} tagged images of other classes called {TAG_CLASS!r}"
          f" (at least {MIN_CHEAT_RATE:.0%}); accuracy on all {len(y_tagged)} tagged images {tagged_accuracy:.2%}")
    print(f"clean demo model on the same {n_others} tagged images: {clean_model_accuracy:.2%} correct"
          f" (at least {MIN_CLEAN_MODEL_ACCURACY:.0%})")
    print(f"Grad-CAM peak-in-tag rate (predicted class, {LAST_CONV_LAYER}) on them: {peak_in_tag:.2%}"
          f" (at least {MIN_PEAK_IN_TAG:.0%})")
    size = save_demo_weights(model, args.out)
    print(f"weights: {args.out} ({size / 1024:.0f} KiB); wall time {time.perf_counter() - started:.0f} s")
    missed = (accuracy < MIN_CLEAN_ACCURACY or cheat_rate < MIN_CHEAT_RATE
              or clean_model_accuracy < MIN_CLEAN_MODEL_ACCURACY or peak_in_tag < MIN_PEAK_IN_TAG)
    if missed:
        print("FAILED: a figure is below its minimum", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
