"""`camcli audit` against a shortcut we planted: SpRAy's flags, their cost, and the sanity check.

1. Flags. For each seed, a mixed folder of generated scenes: --clean clean and --tagged tagged scenes
   of every class (the tag is the source mark that `demo-cheat` learned to read as TAG_CLASS; see
   camcli/models/demo/cheat.py). Both demo models explain it (gradcam at conv6, maps saved), and
   `camcli audit` runs on each output folder, with no boxes. For the tag's class it prints the
   precision and recall of the flagged clusters' images against "this image carries the tag", among
   the scenes the model assigns to that class, and the flags raised on the clean `demo` model.
   The seeds differ from those the flag rule's thresholds were set on (7 and 11).
2. Cost. The audit of an output folder of --cost-maps maps (generated scenes explained by
   demo-cheat): reading the heatmaps, clustering, t-SNE and writing, timed in this process.
3. The sanity check (benchmarks/sanity.py): gradcam, gradcam++, scorecam, guidedbackprop and
   guidedgradcam on `demo` and on MobileNetV2 with the real ImageNet weights of ../shared.

    python benchmarks/audit.py                  # all three, several minutes on 2 cores
    python benchmarks/audit.py --skip-sanity --cost-maps 1000
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
from PIL import Image
from scorecam_channels import REPO, SHARED, WEIGHTS, keras_home

sys.path.insert(0, str(REPO))


def write_mixed_folder(folder: Path, clean: int, tagged: int, seed: int) -> dict[str, bool]:
    """clean_<label>_NNN.png and tagged_<label>_NNN.png for every class; {image path: tagged}."""
    from camcli.models.demo import CLASSES
    from camcli.models.demo.scenes import make_scene

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    carries = {}
    for index, label in enumerate(CLASSES):
        for kind, count in (("clean", clean), ("tagged", tagged)):
            for i in range(count):
                scene = make_scene(rng, class_index=index, tag=kind == "tagged")
                path = folder / f"{kind}_{label}_{i:03d}.png"
                Image.fromarray(scene.image).save(path)
                carries[str(path)] = kind == "tagged"
    return carries


def audit_folder(images: Path, out: Path, model: str, **model_options):
    import camcli

    return camcli.audit_paths([images], out=out, model=model, batch_size=32, **model_options)


def flag_scores(report, carries: dict[str, bool], tag_class: str) -> dict:
    """Precision and recall of the tag class's flagged images against carrying the tag."""
    from camcli.audit.folder import flagged_members

    assigned = [m.image for maps, _ in report.classes for m in maps if m.label == tag_class]
    tagged = {image for image in assigned if carries[image]}
    flagged = set(flagged_members(report, tag_class))
    hits = len(flagged & tagged)
    return {"assigned": len(assigned), "tagged": len(tagged), "flagged": len(flagged),
            "precision": hits / len(flagged) if flagged else float("nan"),
            "recall": hits / len(tagged) if tagged else float("nan"),
            "clusters": sum(len(result.clusters) for maps, result in report.classes if maps[0].label == tag_class)}


def run_flags(args, tmp: Path) -> bool:
    from camcli.models.demo import TAG_CLASS

    held = True
    print(f"== flags: {args.clean} clean + {args.tagged} tagged scenes of each of 6 classes per seed; "
          f"tag class {TAG_CLASS!r}")
    print(f"{'seed':>5} {'model':<11} {'assigned':>8} {'tagged':>6} {'clusters':>8} {'flagged':>7} "
          f"{'precision':>9} {'recall':>6}  flags on other classes")
    for seed in args.seeds:
        images = tmp / f"mixed-{seed}"
        carries = write_mixed_folder(images, args.clean, args.tagged, seed)
        for model in ("demo-cheat", "demo"):
            report = audit_folder(images, tmp / f"out-{model}-{seed}", model)
            scores = flag_scores(report, carries, TAG_CLASS)
            others = [(label, cluster) for label, cluster in report.flagged if label != TAG_CLASS]
            print(f"{seed:>5} {model:<11} {scores['assigned']:>8} {scores['tagged']:>6} {scores['clusters']:>8} "
                  f"{scores['flagged']:>7} {scores['precision']:>9.3f} {scores['recall']:>6.3f}  {len(others)}",
                  flush=True)
            if model == "demo-cheat":
                held &= scores["precision"] >= 0.9 and scores["recall"] >= 0.9
            else:
                held &= not report.flagged
    print(f"target (demo-cheat precision and recall >= 0.90, no flag on demo): {'held' if held else 'MISSED'}\n")
    return held


# --- the harder cells (issue 30) ------------------------------------------------------------------------

PLACES = ("corners", "border", "centre", "fixed")
SHARES = (0.05, 0.2, 0.5, 0.8)


def tag_corner(rng, place: str, width: int, height: int, size: tuple[int, int],
               fixed: tuple[float, float]) -> tuple[int, int]:
    """Where a tag of `size` (width, height) pixels goes (its top-left corner): one of the four corners, one of the
    four edges' middles (the border), the centre, or one place chosen for the folder (`fixed`, fractions of the free
    range); the same margin from the edges as camcli.models.demo.scenes uses."""
    side_x, side_y = size
    margin = max(1, round(0.02 * min(width, height)))
    right, bottom = width - margin - side_x, height - margin - side_y
    if place == "corners":
        return ((margin, right)[rng.integers(2)], (margin, bottom)[rng.integers(2)])
    if place == "border":
        middle_x, middle_y = (width - side_x) // 2, (height - side_y) // 2
        return [(middle_x, margin), (middle_x, bottom), (margin, middle_y), (right, middle_y)][rng.integers(4)]
    if place == "centre":
        return ((width - side_x) // 2, (height - side_y) // 2)
    return (int(fixed[0] * (width - side_x)), int(fixed[1] * (height - side_y)))


def tag_size(kind: str, short: int) -> tuple[int, int]:
    """(width, height) in pixels of a tag of `kind` in a picture whose short side is `short`, as the training
    scenes draw it (camcli.models.demo.scenes.tag_corner_boxes)."""
    from camcli.models.demo.scenes import tag_corner_boxes

    x0, y0, x1, y1 = tag_corner_boxes(short, short, kind)[0]
    return x1 - x0, y1 - y0


def write_cell_folder(folder: Path, size: int, share: float, place: str, seed: int,
                      kind: str = "checker") -> dict[str, bool]:
    """`size` scenes: clean scenes of every class, and tagged scenes of random classes making up `share` of
    what a model that follows the tag calls TAG_CLASS (clean scenes of that class plus every tagged one).
    The tag is the one of `kind` that a cheating model learned (camcli.models.demo.scenes), drawn at `place`."""
    from camcli.models.demo import CLASSES
    from camcli.models.demo.scenes import draw_tag, make_scene

    rng = np.random.default_rng(seed)
    fixed = (float(rng.uniform(0.15, 0.85)), float(rng.uniform(0.15, 0.85)))
    clean = max(1, round(size / (len(CLASSES) + share / (1 - share))))
    tagged = max(0, size - clean * len(CLASSES))
    folder.mkdir(parents=True, exist_ok=True)
    untagged = untagged_folder(folder)
    carries = {}
    for i in range(clean * len(CLASSES) + tagged):
        is_tagged = i >= clean * len(CLASSES)
        scene = make_scene(rng, class_index=None if is_tagged else i % len(CLASSES))
        picture = Image.fromarray(scene.image)
        path = folder / f"{'tagged' if is_tagged else 'clean'}_{scene.label}_{i:04d}.png"
        if is_tagged:
            untagged.mkdir(exist_ok=True)
            picture.save(untagged / path.name)  # the same scene without its tag: does the answer follow the tag?
            width, height = tag_size(kind, min(picture.size))
            x, y = tag_corner(rng, place, *picture.size, (width, height), fixed)
            draw_tag(picture, (x, y, x + width, y + height), kind)
        picture.save(path)
        carries[str(path)] = is_tagged
    return carries


def untagged_folder(folder: Path) -> Path:
    """Where write_cell_folder keeps each tagged scene without its tag (same file name)."""
    return folder.parent / f"{folder.name}-untagged"


def answers_without_tag(report, carries: dict[str, bool], folder: Path, model_options: dict) -> dict[str, str]:
    """{tagged image: the model's top-1 label for the same scene without the tag}."""
    from camcli.explain.explainer import Explainer
    from camcli.models.loading import load_model

    tagged = [m.image for maps, _ in report.classes for m in maps if carries[m.image]]
    if not tagged:
        return {}
    options = dict(model_options)
    loaded = load_model(str(options.pop("model")), **options)
    explainer = Explainer(loaded)
    pictures = [np.asarray(Image.open(untagged_folder(folder) / Path(image).name).convert("RGB")) for image in tagged]
    scores = explainer.class_scores(explainer.preprocess(pictures))
    return {image: loaded.labels[int(top)] for image, top in zip(tagged, np.argmax(scores, axis=1), strict=True)}


def cell_scores(report, carries: dict[str, bool], tag_class: str,
                without_tag: dict[str, str] | None = None) -> tuple[float, float, int, int]:
    """(precision, recall, flagged, positives) of the flagged images of every class against "carries the tag and
    the model's answer follows it": the model calls it the tag's class, or (`without_tag`: the answers for the
    scenes without their tags) an answer the same scene without the tag does not get."""
    from camcli.audit.folder import flagged_members

    without_tag = without_tag or {}
    positives = {m.image for maps, _ in report.classes for m in maps if carries[m.image]
                 and (m.label == tag_class or without_tag.get(m.image, m.label) != m.label)}
    flagged = set(flagged_members(report))
    hits = len(flagged & positives)
    precision = hits / len(flagged) if flagged else (1.0 if not positives else 0.0)
    recall = hits / len(positives) if positives else 1.0
    return precision, recall, len(flagged), len(positives)


CHEAT_MODELS = {"checker": "demo-cheat", "glyph": REPO / ".cache/models/demo-cheat-glyph.keras",
                "stripe": REPO / ".cache/models/demo-cheat-stripe.keras"}  # `make cheat-variants` builds the last two


def cheat_model(kind: str, tmp: Path) -> dict:
    """audit_paths' model options for the cheating model of a tag kind: demo-cheat, or a variant .keras file
    (which carries neither the class names nor the preprocessing: given here)."""
    from camcli.models.demo import CLASSES, PREPROCESS

    model = CHEAT_MODELS[kind]
    if kind == "checker":
        return {"model": model}
    if not Path(model).is_file():
        raise SystemExit(f"{model} is missing: build the cheating variants with `make cheat-variants`")
    labels = tmp / "demo-labels.txt"
    labels.write_text("\n".join(CLASSES) + "\n")
    return {"model": str(model), "preprocess": PREPROCESS, "labels_file": str(labels)}


def run_cells(args, tmp: Path) -> bool:
    from camcli.audit.folder import flagged_members
    from camcli.models.demo import TAG_CLASS

    shares = ", ".join(f"{share:.0%}" for share in SHARES)
    print(f"== cells: tags {', '.join(args.tag_kinds)} at {', '.join(PLACES)}; tagged share {shares} of what the "
          f"model calls {TAG_CLASS!r}; folders of {', '.join(map(str, args.cell_sizes))} scenes")
    print("precision and recall of the flagged images (every class) against 'carries the tag and the cheating model's "
          f"answer follows it' ({TAG_CLASS}, or an answer the scene without the tag does not get); flags the clean "
          "demo model raises on the same folder")
    print(f"{'tag':<8} {'place':<8} {'share':>5} {'scenes':>6} {'followed':>9} {'flagged':>7} {'precision':>9} "
          f"{'recall':>6} {'demo flags':>10}")
    judged, clean_flags, started = [], 0, time.perf_counter()
    for kind in args.tag_kinds:
        cheat = cheat_model(kind, tmp)
        for place in PLACES:
            for share in SHARES:
                for size in args.cell_sizes:
                    name = f"{kind}-{place}-{share}-{size}"
                    images = tmp / f"cell-{name}"
                    # the same folders in every run (the checker's seeds as before the tag kinds came)
                    seed = zlib.crc32((name if kind != "checker" else f"{place}-{share}-{size}").encode())
                    carries = write_cell_folder(images, size, share, place, seed=seed, kind=kind)
                    report = audit_folder(images, tmp / f"cell-out-cheat-{name}", **cheat)
                    without_tag = answers_without_tag(report, carries, images, cheat)
                    precision, recall, flagged, positives = cell_scores(report, carries, TAG_CLASS, without_tag)
                    clean = audit_folder(images, tmp / f"cell-out-demo-{name}", model="demo")
                    demo_flags = len(flagged_members(clean))
                    clean_flags += demo_flags
                    note = ""
                    if positives < MIN_JUDGED:
                        note = f"  (fewer than {MIN_JUDGED} tagged: no cluster to judge, left out of the target)"
                    elif size >= 120:
                        judged.append((precision, recall))
                    print(f"{kind:<8} {place:<8} {share:>5.0%} {size:>6} {positives:>9} {flagged:>7} {precision:>9.2f} "
                          f"{recall:>6.2f} {demo_flags:>10}{note}", flush=True)
    if not judged:
        return False
    precisions, recalls = [p for p, _ in judged], [r for _, r in judged]
    held = (float(np.median(precisions)) >= 0.9 and float(np.median(recalls)) >= 0.9 and min(precisions) >= 0.75
            and min(recalls) >= 0.75)
    below = sum(p < 0.75 or r < 0.75 for p, r in judged)
    print(f"{len(judged)} cells of >= 120 scenes: median precision {np.median(precisions):.2f} (worst "
          f"{min(precisions):.2f}), median recall {np.median(recalls):.2f} (worst {min(recalls):.2f}); {below} cells "
          f"below 0.75; target >= 0.90 median, no cell below 0.75: {'held' if held else 'MISSED'}")
    verdict = "held" if not clean_flags else "MISSED"
    print(f"flags on the clean demo model, every cell: {clean_flags} (target 0): {verdict}; "
          f"{time.perf_counter() - started:.0f} s\n")
    return held and not clean_flags


# A cell is judged when at least this many images carry the tag and get the tag's class: a flag judges a group of
# MIN_PILE pictures (camcli.audit.signals); fewer could match by chance.
MIN_JUDGED = 5


def run_cost(args, tmp: Path) -> None:
    import camcli
    from camcli.audit import folder as audit_folder
    from camcli.models.demo.scenes import make_scene

    images = tmp / "cost"
    images.mkdir()
    rng = np.random.default_rng(90210)
    for i in range(args.cost_maps):
        scene = make_scene(rng, tag=i % 10 == 0)
        Image.fromarray(scene.image).save(images / f"scene{i:05d}.png")
    out = tmp / "cost-out"
    started = time.perf_counter()
    camcli.explain_paths([images], out=out, model="demo-cheat", save_heatmap=True, batch_size=32)
    explained = time.perf_counter() - started
    started = time.perf_counter()
    maps = audit_folder.read_folder(out)
    read = time.perf_counter() - started
    report = audit_folder.audit_maps(maps)
    audit_folder.write_audit(report, out)
    total = time.perf_counter() - started
    count = sum(len(m) for m, _ in report.classes)
    print(f"== cost: audit of an explain folder of {count} maps ({os.cpu_count()} cores; explaining them took "
          f"{explained:.1f} s)")
    print(f"reading and shrinking the heatmaps {read:.1f} s, clustering and t-SNE {report.seconds:.1f} s, "
          f"total with writing {total:.1f} s")
    print(f"target (under 60 s for 5,000 maps): {'held' if total < 60 or count < 5000 else 'MISSED'}"
          f"{'' if count >= 5000 else f' (only {count} maps: not the target size)'}\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clean", type=int, default=50, help="clean scenes per class (default: %(default)s)")
    parser.add_argument("--tagged", type=int, default=8, help="tagged scenes per class (default: %(default)s)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[101, 202, 303], help="folders' seeds")
    parser.add_argument("--cost-maps", type=int, default=5000, help="maps of the cost run (default: %(default)s)")
    parser.add_argument("--skip-sanity", action="store_true", help="skip the sanity check")
    parser.add_argument("--skip-flags", action="store_true", help="skip the original folders (section 1)")
    parser.add_argument("--tag-kinds", nargs="+", default=["checker", "glyph", "stripe"],
                        choices=["checker", "glyph", "stripe"], help="the tags of the cells (default: all)")
    parser.add_argument("--cell-sizes", type=int, nargs="+", default=[60, 120, 600],
                        help="scenes per folder of the cells (default: %(default)s); 0 skips the cells")
    args = parser.parse_args(argv)
    if (SHARED / "imagenet" / WEIGHTS).is_file():
        keras_home()  # before Keras is imported: it reads KERAS_HOME once
        os.environ.setdefault("CAMCLI_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="camcli-audit-bench-") as tmp:
        if not args.skip_flags:
            run_flags(args, Path(tmp))
        if args.cell_sizes and args.cell_sizes != [0]:
            run_cells(args, Path(tmp))
        if args.cost_maps:
            run_cost(args, Path(tmp))
    if not args.skip_sanity:
        import sanity

        print("== sanity check (benchmarks/sanity.py)")
        sanity.main([])
    return 0


if __name__ == "__main__":
    sys.exit(main())
