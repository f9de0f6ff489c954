"""The command line: parse options, call the library, print. TensorFlow is imported only inside the
commands that need a model, so `camcli --help` and `camcli models` stay fast."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path

import click

from camcli import __version__
from camcli.errors import CamcliError, UsageError
from camcli.models import catalog

EXIT_FAILED_IMAGES = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class MethodChoice(click.Choice):
    """`--method`'s choices, read from the method registry when first needed (parsing, `explain
    --help`), so that `camcli --help` and `camcli models` never import numpy through camcli.explain.methods."""

    def __init__(self):
        super().__init__((), case_sensitive=False)

    @property
    def choices(self):
        from camcli.explain.methods import REGISTRY

        return tuple(REGISTRY)

    @choices.setter
    def choices(self, value):  # click.Choice.__init__ assigns the (empty) list given above
        pass


class CamcliGroup(click.Group):
    """Turns library errors into one line on stderr and an exit status; tracebacks only with --debug."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except CamcliError as error:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"camcli: error: {error}", err=True)
            ctx.exit(EXIT_USAGE if isinstance(error, UsageError) else EXIT_FAILED_IMAGES)
        except KeyboardInterrupt:
            click.echo("camcli: interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except BrokenPipeError:  # `camcli methods | head`: the reader left; stop quietly, as cat does
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(EXIT_FAILED_IMAGES)
        except Exception as error:  # a bug: say so in one line, keep the traceback behind --debug
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"camcli: internal error: {type(error).__name__}: {error} "
                       "(rerun with --debug for the traceback)", err=True)
            ctx.exit(EXIT_FAILED_IMAGES)


@click.group(cls=CamcliGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="camcli")
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.pass_context
def cli(ctx, debug):
    """Class activation maps (CAM, Grad-CAM) for Keras image classifiers.

    \b
    Example:
      camcli explain cat.jpg --layer block5_conv3
      camcli explain photos/ --model demo --out results/
    """
    ctx.ensure_object(dict)["debug"] = debug


def parse_shard(ctx, param, value):
    """--shard K/N -> (K, N), 1 <= K <= N."""
    if value is None:
        return None
    try:
        k, n = (int(part) for part in value.split("/"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not K/N, e.g. 1/4") from None
    if n < 1 or not 1 <= k <= n:
        raise click.BadParameter(
            f"{value!r}: shards are numbered 1 to N; for a 0-based job index i (Slurm --array=0-3, Kubernetes "
            "JOB_COMPLETION_INDEX) pass $((i+1))/N"
        )
    return k, n


def model_options(function):
    """--model, --weights, --preprocess, --labels, --unsafe-load: shared by every command that loads a model."""
    options = [
        click.option("--model", "model_spec", default="vgg16", show_default=True, metavar="NAME|FILE",
                     help="A built-in model (see `camcli models`) or a .keras/.h5 file."),
        click.option("--weights", metavar="FILE|none",
                     help="Built-in models: a local weights file, or `none` for random weights "
                          "(smoke tests, benchmarks). Default: Keras' ImageNet weights from $KERAS_HOME/models."),
        click.option("--preprocess", type=click.Choice(catalog.PREPROCESS_MODES),
                     help="Model files: how pixels are scaled (keras.applications modes, scale01 = x/255, "
                          "none = raw 0..255). Default: none."),
        click.option("--labels", "labels_file", type=click.Path(dir_okay=False),
                     help="Model files: class names, one per line."),
        click.option("--unsafe-load", is_flag=True,
                     help="Allow model files that contain code (Lambda layers). Only for files you trust."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def check_output_folder(out_dir: Path) -> None:
    """Fail early if --out cannot be created or written, without creating anything yet."""
    existing = out_dir.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"cannot create output folder {out_dir}: {existing} is not a folder; choose another --out")
    if not os.access(existing, os.W_OK):
        raise UsageError(f"cannot write to output folder {out_dir}: {existing} is not writable; choose another --out")


def load(model_spec, weights, preprocess, labels_file, unsafe_load):
    from camcli.models.loading import load_model

    return load_model(model_spec, weights=weights, preprocess=preprocess, labels_file=labels_file,
                      unsafe=unsafe_load)


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@model_options
@click.option("--layer", "layers", multiple=True,
              help="Layer to explain; `outer/inner` inside nested models. Repeatable: the maps of several "
                   "layers are fused (mean of the per-layer maps). Default: the last spatial layer before "
                   "the head (see `camcli layers`).")
@click.option("--method", "methods", multiple=True, type=MethodChoice(),
              help="Mapping method (see `camcli methods`); repeat to write every method's maps in one run "
                   "(the methods share one forward and backward pass per batch). Default: gradcam.")
@click.option("--aug-smooth", is_flag=True,
              help="Average the maps of flipped and zoomed copies (6 passes per image): smoother, better centred.")
@click.option("--eigen-smooth", is_flag=True,
              help="Reduce the method's weighted activations by their first principal component (less noise).")
@click.option("--max-channels", type=int, metavar="N",
              help="scorecam: score only the N channels with the most activation (N forward passes per "
                   "image, batched). Default: every channel.")
@click.option("--class", "classes", multiple=True, metavar="CLASS",
              help="Class to explain: index, label (case-insensitive) or top1..topK. Repeatable; "
                   "each class gets its own map. Default: top1.")
@click.option("--top-k", type=click.IntRange(min=1),
              help="Predictions recorded per image. Default: 5 (or every class, when there are fewer).")
@click.option("--head", type=click.Choice(["auto", "softmax", "sigmoid"]), default="auto", show_default=True,
              help="How scores come from the model's output; auto reads the final activation.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("camcli_out"),
              show_default=True, help="Output folder (mirrors the input tree).")
@click.option("--alpha", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Heatmap opacity in the overlays.")
@click.option("--colormap", default="jet", show_default=True, help="Any matplotlib colour map name.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="Images per compiled step.")
@click.option("--save-heatmap", is_flag=True,
              help="Also write each map as float32 .npy at the image's resolution, values in [0, 1].")
@click.option("--box-threshold", type=click.FloatRange(0, 1), default=0.2, show_default=True,
              help="The JSON's bbox: the largest connected region at or above this fraction of the map's maximum.")
@click.option("--save-mask", is_flag=True, help="Also write each map's thresholded region as a binary PNG mask.")
@click.option("--draw-box", is_flag=True, help="Draw the box on the overlay.")
@click.option("--panel", is_flag=True,
              help="Also write a panel per map: the original, the heatmap with a colour bar, and the overlay.")
@click.option("--report", is_flag=True, help="Write OUT/index.html, a page of every image, map and failure.")
@click.option("--fail-fast", is_flag=True, help="Stop at the first image that fails (exit 1).")
@click.option("--resume", is_flag=True,
              help="Skip images whose outputs an earlier run (same model, layer, method, classes) completed.")
@click.option("--shard", callback=parse_shard, metavar="K/N",
              help="Explain only shard K of N (1 <= K <= N), split by relative path: N processes (job "
                   "array tasks, GPUs) cover every image once. Writes summary.K-of-N.json.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no closing line.")
@click.option("--json", "print_json", is_flag=True, help="Print the run summary as JSON on stdout.")
def explain(paths, model_spec, weights, preprocess, labels_file, unsafe_load, layers, methods, aug_smooth,
            eigen_smooth, max_channels, classes, top_k, head, out_dir, alpha, colormap, batch_size, save_heatmap,
            box_threshold, save_mask, draw_box, panel, report, fail_fast, resume, shard, quiet, print_json):
    """Write heatmap overlays and top-k predictions for images and folders.

    PATHS are image files or folders (searched recursively; images are recognised by content). For
    `<root>/a/cat.jpg` the outputs are `OUT/a/cat.json` and `OUT/a/cat.<method>.<class>.png`.
    Exit status: 0 all images explained, 1 some failed (the rest are written), 2 usage error.

    \b
    Example:
      camcli explain cat.jpg --layer block5_conv3 --class tabby --class top2
    """
    from tqdm import tqdm

    from camcli.explain.explainer import Explainer, MethodSet
    from camcli.explain.methods import REGISTRY
    from camcli.maps.overlay import colormap_lut
    from camcli.runs.discovery import discover
    from camcli.runs.runner import RunOptions, run, summary_record

    colormap_lut(colormap)  # fail on a bad name, or an unusable --out, before the model loads
    check_output_folder(out_dir)
    tasks, skipped = discover(paths, out_dir)
    if not tasks and not skipped:
        raise UsageError(f"no images found in {', '.join(map(str, paths))}")
    loaded = load(model_spec, weights, preprocess, labels_file, unsafe_load)
    methods = list(dict.fromkeys(name.lower() for name in methods)) or ["gradcam"]
    if max_channels is not None and not any(REGISTRY[name].needs_masked_scores for name in methods):
        raise UsageError(f"--max-channels applies to --method scorecam, not {', '.join(methods)}")
    explainers = [Explainer(loaded, layer=list(layers) or None, method=name, classes=classes, top_k=top_k, head=head,
                            eigen_smooth=eigen_smooth, aug_smooth=aug_smooth, score_batch_size=batch_size * 4,
                            max_channels=max_channels if REGISTRY[name].needs_masked_scores else None)
                  for name in methods]
    explainer = explainers[0] if len(explainers) == 1 else MethodSet(explainers)
    options = RunOptions(out_dir, batch_size, alpha, colormap, save_heatmap, fail_fast=fail_fast, resume=resume,
                         shard=shard, box_threshold=box_threshold, save_mask=save_mask, draw_box=draw_box,
                         panel=panel)
    total = len(tasks) + len(skipped) if shard is None else None
    bar = tqdm(total=total, unit="img", file=sys.stderr, disable=quiet or not sys.stderr.isatty())
    stop = threading.Event()

    def on_interrupt(signum, frame):
        if stop.is_set():  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        stop.set()
        bar.write("camcli: interrupted: finishing the current batch (Ctrl-C again to stop now)", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        with bar:
            summary = run(
                explainer, tasks, options, skipped,
                on_failure=lambda image, reason: bar.write(f"camcli: failed: {image}: {reason}", file=sys.stderr),
                on_progress=bar.update, stop=stop,
            )
    finally:
        signal.signal(signal.SIGINT, previous)
    if report:
        from camcli.report.page import write_report

        page = write_report(out_dir)
        if not quiet:
            click.echo(f"camcli: report: {page}", err=True)
    if print_json:
        click.echo(json.dumps(summary_record(explainer, summary, shard), indent=2))
    if not quiet:
        click.echo(f"camcli: explained {summary.ok} of {summary.images} images ({summary.failed} failed) with "
                   f"{'+'.join(explainer.method_names)} at {explainer.layer} in {summary.elapsed_seconds:.1f} s "
                   f"({summary.images_per_second:.1f} images/s) -> {out_dir}", err=True)
        if not loaded.pretrained:
            click.echo("camcli: warning: random weights (--weights none): the predictions are meaningless", err=True)
    if summary.interrupted:
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(EXIT_FAILED_IMAGES if summary.failed else 0)


@cli.command()
@click.argument("out_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "print_json", is_flag=True, help="Print the merged summary as JSON on stdout.")
def summary(out_dir, print_json):
    """Merge the shard summaries in OUT_DIR into summary.json and report missing shards.

    Exit status 0 when every shard is present and no image failed, 1 otherwise.

    \b
    Example:
      camcli summary results/
    """
    from camcli.runs.files import save_json
    from camcli.runs.runner import SUMMARY_NAME, merge_summaries

    merged = merge_summaries(out_dir)
    if merged.get("shards"):
        save_json(out_dir / SUMMARY_NAME, merged)
    if print_json:
        click.echo(json.dumps(merged, indent=2))
    else:
        shards = f" from {merged['shards']} shards" if merged.get("shards") else ""
        click.echo(f"{merged['images']} images{shards}: {merged['ok']} ok, {merged['failed']} failed")
        for failure in merged["failures"]:
            click.echo(f"  failed: {failure['image']}: {failure['error']}")
        if merged["missing_shards"]:
            missing = ", ".join(f"{k}/{merged['shards']}" for k in merged["missing_shards"])
            click.echo(f"missing shards: {missing}")
    sys.exit(EXIT_FAILED_IMAGES if merged["failed"] or merged["missing_shards"] else 0)


@cli.command()
@model_options
def layers(model_spec, weights, preprocess, labels_file, unsafe_load):
    """List the layers that can be explained (4-D outputs); `*` marks the default.

    \b
    Example:
      camcli layers --model resnet50
    """
    entry = catalog.lookup(model_spec)
    if entry is not None and entry.name != catalog.DEMO_NAME and weights is None:
        weights = "none"  # the layer list does not depend on the weights: skip the download
    loaded = load(model_spec, weights, preprocess, labels_file, unsafe_load)
    from camcli.models.layers import default_layer, spatial_layers

    default = default_layer(loaded.model)
    rows = [(("*" if info.path == default else " "), info.path, info.type_name,
             "x".join("?" if d is None else str(d) for d in info.output_shape[1:]))
            for info in spatial_layers(loaded.model)]
    width = max(len(row[1]) for row in rows)
    type_width = max(len(row[2]) for row in rows)
    for mark, path, type_name, shape in rows:
        click.echo(f"{mark} {path:<{width}}  {type_name:<{type_width}}  {shape}")


@cli.command()
def models():
    """List the built-in models: input size, default layer, and whether CAM applies.

    \b
    Example:
      camcli models
    """
    entries = [catalog.demo_entry(), *catalog.BUILTIN_MODELS.values()]
    width = max(len(e.name) for e in entries)
    layer_width = max(len(e.default_layer) for e in entries)
    click.echo(f"{'name':<{width}}  {'input':>7}  {'default layer':<{layer_width}}  cam  description")
    for e in entries:
        size = f"{e.input_size}x{e.input_size}"
        click.echo(f"{e.name:<{width}}  {size:>7}  {e.default_layer:<{layer_width}}  {'yes' if e.cam else 'no ':<3}  "
                   f"{e.summary}")


@cli.command()
@click.option("--markdown", is_flag=True, help="Print the table as Markdown (as in the README).")
def methods(markdown):
    """List the mapping methods, their papers, and what each costs.

    \b
    Example:
      camcli methods
    """
    from camcli.explain.methods import REGISTRY, describe, markdown_table

    if markdown:
        click.echo(markdown_table())
        return
    width = max(len(name) for name in REGISTRY)
    for method in REGISTRY.values():
        click.echo(f"{method.name:<{width}}  {method.summary} ({method.paper}; {describe(method)})")


@cli.command("evaluate")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--truth", "truth_path", required=True, type=click.Path(path_type=Path), metavar="FILE|DIR",
              help="Ground-truth boxes: CSV image,x0,y0,x1,y1[,label] (pixels, x1/y1 exclusive), JSON "
                   "{\"img.jpg\": [{\"box\": [x0, y0, x1, y1], \"label\": \"cat\"}]}, or a folder of Pascal VOC XML.")
@model_options
@click.option("--method", "methods", multiple=True, type=MethodChoice(),
              help="Mapping method; repeat to compare methods in one run. Default: gradcam.")
@click.option("--layer", "layers", multiple=True,
              help="Layer to explain, as for `camcli explain` (repeatable: maps are fused). Default: the last "
                   "spatial layer before the head.")
@click.option("--head", type=click.Choice(["auto", "softmax", "sigmoid"]), default="auto", show_default=True,
              help="How scores come from the model's output; auto reads the final activation.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("camcli_out"),
              show_default=True, help="Folder for evaluation.json and evaluation.csv.")
@click.option("--steps", type=click.IntRange(min=0), default=50, show_default=True,
              help="Deletion/insertion steps (2 x (steps + 1) forward passes per image and method); 0 skips them.")
@click.option("--box-threshold", type=click.FloatRange(0, 1), default=0.2, show_default=True,
              help="The map's box covers its largest region above this fraction of its maximum (CAM paper).")
@click.option("--pointing-tolerance", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Pointing game: a peak this many pixels outside a box still hits (Zhang et al. use 15).")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="Images per compiled step.")
@click.option("--explain-class", type=click.Choice(["predicted", "truth"]), default="predicted", show_default=True,
              help="Whose map is scored against the boxes: the model's top-1 class (what it decided on; catches a "
                   "model that looks at a watermark) or the truth label's (ground-truth-known pointing game).")
@click.option("--fail-under", multiple=True, metavar="METRIC=VALUE",
              help="Exit 1 when a higher-is-better metric (pointing, energy, iou, corloc, insertion, "
                   "confidence_increase) is below VALUE for any method. Repeatable.")
@click.option("--fail-over", multiple=True, metavar="METRIC=VALUE",
              help="Exit 1 when a lower-is-better metric (loc_error, deletion, average_drop) is above VALUE "
                   "for any method. Repeatable.")
def evaluate_command(paths, truth_path, model_spec, weights, preprocess, labels_file, unsafe_load, methods, layers,
                     head, out_dir, steps, box_threshold, pointing_tolerance, batch_size, explain_class, fail_under,
                     fail_over):
    """Score heatmaps against ground-truth boxes (localization and faithfulness) and gate CI on them.

    Prints a table of metrics per method (fractions in [0, 1]) and writes OUT/evaluation.json and
    OUT/evaluation.csv. Each image's boxes are scored against the map of its top-1 class, or with
    --explain-class truth of the boxes' label; images without truth are listed and skipped.
    Exit status: 0 every gate passed, 1 a gate failed or an image could not be read, 2 usage error.

    \b
    Example:
      camcli evaluate sample_images/generated --truth sample_images/generated/truth.csv \\
          --model demo --method gradcam --method cam --fail-under pointing=0.8
    """
    from tqdm import tqdm

    from camcli.evaluate import evaluation
    from camcli.evaluate.truth import load_truth
    from camcli.explain.explainer import Explainer
    from camcli.runs.discovery import discover

    gates = [evaluation.parse_gate(text, "under") for text in fail_under]
    gates += [evaluation.parse_gate(text, "over") for text in fail_over]
    check_output_folder(out_dir)
    truth = load_truth(truth_path)
    tasks, skipped = discover(paths, out_dir)
    if not tasks and not skipped:
        raise UsageError(f"no images found in {', '.join(map(str, paths))}")
    options = evaluation.EvaluationOptions(out_dir, box_threshold, steps, batch_size, score_batch_size=batch_size * 4,
                                pointing_tolerance=pointing_tolerance, gates=gates, truth_name=str(truth_path),
                                explain_class=explain_class)
    evaluation.check_computable(gates, options, truth)
    evaluation.check_matches(truth, tasks, str(truth_path))
    loaded = load(model_spec, weights, preprocess, labels_file, unsafe_load)
    classes = evaluation.evaluation_classes(truth, loaded.labels, tasks, explain_class)
    explainers = [Explainer(loaded, layer=list(layers) or None, method=method, classes=classes, head=head,
                            score_batch_size=batch_size * 4) for method in dict.fromkeys(methods or ["gradcam"])]
    bar = tqdm(total=len(tasks), unit="img", file=sys.stderr, disable=not sys.stderr.isatty())
    with bar:
        report = evaluation.evaluate(explainers, tasks, truth, options, skipped,
                          on_failure=lambda image, reason: bar.write(f"camcli: failed: {image}: {reason}",
                                                                     file=sys.stderr),
                          on_progress=bar.update)
    click.echo(evaluation.format_table(report))
    for item in report.without_truth[:5]:
        click.echo(f"camcli: skipped: {item['image']}: {item['reason']}", err=True)
    if len(report.without_truth) > 5:
        click.echo(f"camcli: skipped {len(report.without_truth) - 5} more images without truth "
                   f"(listed in {out_dir / 'evaluation.json'})", err=True)
    for warning in report.warnings:
        click.echo(f"camcli: warning: {warning}", err=True)
    for result in report.failed_gates:
        click.echo(f"camcli: {result.message()}", err=True)
    click.echo(f"camcli: evaluated {report.evaluated} of {report.images} images ({len(report.failures)} failed, "
               f"{len(report.without_truth)} without truth) -> {out_dir}", err=True)
    sys.exit(EXIT_FAILED_IMAGES if report.failed_gates or report.failures else 0)


@cli.command("report")
@click.argument("out_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--title", help="Page title. Default: \"camcli report: <folder name>\".")
def report_command(out_dir, title):
    """Write OUT_DIR/index.html: a self-contained page of the images, overlays, top-k and failures.

    Works on any `camcli explain --out` folder, shards included; small JPEG thumbnails are written
    next to the overlays (and reused on the next run). Open the page from disk; it needs no network.

    \b
    Example:
      camcli report results/ --title "Holiday photos, VGG16"
    """
    from camcli.report.page import write_report

    click.echo(write_report(out_dir, title))


def main():
    cli(prog_name="camcli", obj={})


if __name__ == "__main__":
    main()
