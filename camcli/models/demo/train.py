"""Train the demo model, deterministically, on generated scenes; check it classifies and localises.

    python -m camcli.models.demo.train [--out PATH] [--epochs N] [--seed S]

Scenes come from `camcli.models.demo.scenes` and are resized to INPUT_SIZE x INPUT_SIZE. With seed S the
training set uses seed S, the validation set S + 1 and the held-out set S + 1000. On the held-out
set the script prints the accuracy and the Grad-CAM peak-in-box rate (how often the Grad-CAM map
of the predicted class peaks inside the object's box), saves the weights, and exits 1 if either
figure is below its minimum.
"""

import argparse
import os
import sys
import time

import numpy as np

from camcli.models.demo import CLASSES, INPUT_SIZE, LAST_CONV_LAYER, PREPROCESS, WEIGHTS_PATH

TRAIN_SIZE = 10000  # scenes (the cheating demo trains on as many)
VAL_SIZE = 600
HELD_OUT_SIZE = 600
BATCH_SIZE = 32
LEARNING_RATE = 2e-3  # peak, after one epoch of warm-up
MIN_ACCURACY = 0.95
MIN_PEAK_IN_BOX = 0.90


def parse_training_args(prog, doc, default_out, argv=None):
    """The training scripts' shared options (--out, --epochs, --seed), parsed."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.split("\n")[0])
    parser.add_argument("--out", default=str(default_out), help="where to save the weights (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=10, help="training epochs (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed for data, initialisation and shuffling (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error("--epochs must be at least 1")
    return args


def make_deterministic(seed):
    """Seed Python, numpy and TensorFlow and make TensorFlow's kernels deterministic."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def main(argv=None):
    args = parse_training_args("python -m camcli.models.demo.train", __doc__, WEIGHTS_PATH, argv)
    started = time.perf_counter()
    make_deterministic(args.seed)

    from camcli.models.demo.scenes import make_dataset

    x_train, y_train, _ = make_dataset(TRAIN_SIZE, args.seed, out_size=INPUT_SIZE)
    x_val, y_val, _ = make_dataset(VAL_SIZE, args.seed + 1, out_size=INPUT_SIZE)
    x_test, y_test, box_test = make_dataset(HELD_OUT_SIZE, args.seed + 1000, out_size=INPUT_SIZE)
    generated = time.perf_counter() - started
    print(f"generated {TRAIN_SIZE} + {VAL_SIZE} + {HELD_OUT_SIZE} scenes in {generated:.0f} s", flush=True)

    model = fit_demo_model(x_train, y_train, x_val, y_val, args.epochs, args.seed)

    accuracy = float(np.mean(predict_classes(model, x_test) == y_test))
    peak_in_box = gradcam_peak_in_box_rate(model, x_test, y_test, box_test)

    size = save_demo_weights(model, args.out)
    elapsed = time.perf_counter() - started
    print(f"held-out accuracy: {accuracy:.2%} on {len(y_test)} images (at least {MIN_ACCURACY:.0%})")
    print(f"held-out Grad-CAM peak-in-box rate (predicted class, {LAST_CONV_LAYER}): {peak_in_box:.2%}"
          f" (at least {MIN_PEAK_IN_BOX:.0%})")
    print(f"weights: {args.out} ({size / 1024:.0f} KiB); wall time {elapsed:.0f} s")
    if accuracy < MIN_ACCURACY or peak_in_box < MIN_PEAK_IN_BOX:
        print("FAILED: a figure is below its minimum", file=sys.stderr)
        return 1
    return 0


def fit_demo_model(x_train, y_train, x_val, y_val, epochs, seed):
    """Build the demo architecture and fit it to uint8 images (N, INPUT_SIZE, INPUT_SIZE, 3).

    Adam with one epoch of linear warm-up, then cosine decay; batches are reshuffled every epoch
    from `seed`. Call after `keras.utils.set_random_seed` for a deterministic result.
    """
    import keras
    import tensorflow as tf

    from camcli.models.demo.model import build_demo_model

    def batches(images, labels, shuffle):
        data = tf.data.Dataset.from_tensor_slices((images, labels))
        if shuffle:
            data = data.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
        return data.batch(BATCH_SIZE).map(_scale01)

    model = build_demo_model()
    # One epoch of linear warm-up, then cosine decay to 1% of the peak rate.
    steps_per_epoch = -(-len(x_train) // BATCH_SIZE)
    schedule = keras.optimizers.schedules.CosineDecay(
        LEARNING_RATE / 20,
        decay_steps=max(1, (epochs - 1) * steps_per_epoch),
        alpha=0.01,
        warmup_target=LEARNING_RATE,
        warmup_steps=steps_per_epoch,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    # shuffle=False: the tf.data pipeline already reshuffles (seeded) every epoch.
    model.fit(batches(x_train, y_train, True), validation_data=batches(x_val, y_val, False),
              epochs=epochs, shuffle=False, verbose=2)
    return model


def predict_classes(model, images, batch_size=BATCH_SIZE):
    """The predicted class index of each uint8 image (N, H, W, 3)."""
    probabilities = model.predict(images.astype(np.float32) / np.float32(255.0), batch_size=batch_size, verbose=0)
    return probabilities.argmax(axis=1)


def bare_copy(model):
    """A fresh, uncompiled demo model holding `model`'s weights: what is saved (the trained model's file would also
    hold Adam's state)."""
    from camcli.models.demo.model import build_demo_model

    bare = build_demo_model()
    bare.set_weights(model.get_weights())
    return bare


def save_demo_weights(model, path):
    """Save the weights alone, from a bare copy (`bare_copy`); returns the file's size in bytes."""
    bare_copy(model).save_weights(path)
    return os.path.getsize(path)


def _scale01(images, labels):
    """uint8 RGB to the demo model's input range (PREPROCESS = "scale01")."""
    import tensorflow as tf

    return tf.cast(images, tf.float32) / 255.0, labels


def gradcam_peak_in_box_rate(model, images, labels, boxes, true_class=False, batch_size=64):
    """Fraction of images whose Grad-CAM map at LAST_CONV_LAYER peaks inside the object's box.

    `images` is uint8 (N, H, W, 3), `labels` (N,) class indices, `boxes` (N, 4) as (x0, y0, x1, y1)
    in those pixels. The map explains the predicted class, or the true one with `true_class`.
    It is computed by camcli's own Explainer, the code path the CLI uses.
    """
    from camcli.explain.explainer import Explainer
    from camcli.maps.boxes import peak_xy
    from camcli.maps.overlay import upsample
    from camcli.models.loading import wrap_model
    from camcli.models.preprocess import preprocess

    loaded = wrap_model(model, preprocess=PREPROCESS, labels=list(CLASSES))
    explainers = {}
    height, width = images.shape[1:3]
    hits = 0
    for start in range(0, len(images), batch_size):
        batch = preprocess(images[start:start + batch_size], PREPROCESS)
        if true_class:  # one explainer per class keeps each step compiled once
            results = []
            for image, label in zip(batch, labels[start:start + batch_size]):
                if label not in explainers:
                    explainers[label] = Explainer(loaded, layer=LAST_CONV_LAYER, classes=[str(label)])
                results += explainers[label].explain_batch(image[np.newaxis])
        else:
            if "top1" not in explainers:
                explainers["top1"] = Explainer(loaded, layer=LAST_CONV_LAYER)
            results = explainers["top1"].explain_batch(batch)
        for result, (x0, y0, x1, y1) in zip(results, boxes[start:start + batch_size]):
            peak = peak_xy(upsample(result.maps[0].heatmap, height=height, width=width))
            hits += int(peak is not None and x0 <= peak[0] < x1 and y0 <= peak[1] < y1)
    return hits / len(images)


if __name__ == "__main__":
    sys.exit(main())
