"""The command line: each command parses its options, makes one library call (camcli.api), and prints.

TensorFlow is imported only inside the library calls that need a model, so `camcli --help` and
`camcli models` stay fast. Library errors become one line on stderr and an exit status:

    0    everything worked
    1    some images failed (the others are written), a gate failed, or the outputs cannot be written
    2    usage error: a bad option, model, layer, class or output folder; nothing was done
    130  interrupted by Ctrl-C (SIGINT), 143 by SIGTERM; the summary is written with interrupted: true

The same rule holds for every command (explain, evaluate, audit). --debug shows the traceback, and
keeps the status.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import signal
import sys
import threading
import traceback
import warnings
from dataclasses import replace
from pathlib import Path

import click

from camcli import __version__
from camcli.errors import CamcliError, UsageError, one_line
from camcli.maps.label_settings import DEFAULT_BG_THRESHOLD, REFINEMENTS
from camcli.models import catalog
from camcli.options import (
    AUDIT_GROUPINGS,
    EXPLAIN_CLASSES,
    HEADS,
    OVERLAY_FORMATS,
    PRECISIONS,
    TARGETS,
    AuditOptions,
    FileOptions,
    MapRequest,
    ModelOptions,
    RunHooks,
    RunOptions,
    SanityOptions,
    ScoringOptions,
    field_default,
    field_names,
    parse_shard,
)

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_SIGNAL_BASE = 128  # a run stopped by signal N exits 128 + N, as shells report it


class GivenPath(click.Path):
    """A file or folder option: an empty one ("", which Click or pathlib would read as the working folder)
    is a usage error that says what the option names."""

    def __init__(self, names: str, **options):
        super().__init__(**options)
        self.names = names

    def convert(self, value, param, ctx):
        if isinstance(value, str) and not value.strip():
            self.fail(f"an empty path names no {self.names}", param, ctx)
        return super().convert(value, param, ctx)


def out_folder():
    return GivenPath("folder; give the output folder", file_okay=False, path_type=Path)


class MethodChoice(click.Choice):
    """`--method`'s choices, read from the method registry when first needed (parsing, `explain
    --help`), so that `camcli --help` and `camcli models` never import numpy through the registry."""

    def __init__(self):
        super().__init__((), case_sensitive=False)

    @property
    def choices(self):
        from camcli.explain.methods import REGISTRY

        return tuple(REGISTRY)

    @choices.setter
    def choices(self, value):  # click.Choice.__init__ assigns the (empty) list given above
        pass


def cli_terms(message: str, command: click.Command | None) -> str:
    """A library message in the CLI's terms: `name` and `name=value` of a command's parameter become
    its flag (`max_channels` -> --max-channels, `weights='none'` -> --weights none)."""
    flags = {}
    for param in getattr(command, "params", []):
        if isinstance(param, click.Option) and param.name:
            flags[param.name] = (max(param.opts, key=len), param.is_flag)

    def replace(match: re.Match) -> str:
        name, value = match.group(1), match.group(2)
        if name not in flags:
            return match.group(0)
        flag, is_flag = flags[name]
        if value is None or is_flag:
            return flag
        return f"{flag} {value.strip(chr(39) + chr(34))}"

    return re.sub(r"`([a-z_]+)(?:=([^`]*))?`", replace, message)


class CamcliGroup(click.Group):
    """Turns library errors into one line on stderr and an exit status; tracebacks only with --debug."""

    def invoke(self, ctx):
        try:
            with camcli_warnings(), terminated_as_interrupt():
                return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except CamcliError as error:
            if _debug(ctx):
                raise
            command = self.get_command(ctx, ctx.invoked_subcommand) if ctx.invoked_subcommand else None
            click.echo(f"camcli: error: {cli_terms(one_line(error), command)}", err=True)
            ctx.exit(EXIT_USAGE if isinstance(error, UsageError) else EXIT_FAILED)
        except KeyboardInterrupt as error:  # where no run is there to finish its batch: stop now
            terminated = isinstance(error, Terminated)
            click.echo("camcli: terminated (SIGTERM)" if terminated else "camcli: interrupted", err=True)
            ctx.exit(EXIT_SIGNAL_BASE + (signal.SIGTERM if terminated else signal.SIGINT))
        except BrokenPipeError:  # `camcli methods | head`: the reader left; stop quietly, as cat does
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(EXIT_FAILED)
        except Exception as error:  # a bug: say so in one line, keep the traceback behind --debug
            if _debug(ctx):
                raise
            click.echo(f"camcli: internal error: {type(error).__name__}: {one_line(error)} "
                       "(rerun with --debug for the traceback)", err=True)
            ctx.exit(EXIT_FAILED)


@contextlib.contextmanager
def camcli_warnings():
    """camcli's own warnings (warnings.warn in the library, one line each) become one line on stderr in
    the CLI's terms, `camcli: warning: ...`; other warnings are shown as Python shows them."""
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if not category.__module__.startswith("camcli."):
            return shown(message, category, filename, lineno, file, line)
        context = click.get_current_context(silent=True)
        click.echo(f"camcli: warning: {cli_terms(str(message), context.command if context else None)}", err=True)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = shown


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised as Python raises KeyboardInterrupt for SIGINT: every command stops on it with one
    line and exit 143, also outside a run's batches (loading a model, the sanity check)."""


@contextlib.contextmanager
def terminated_as_interrupt():
    """SIGTERM raises Terminated while a command runs (in the main thread; Click's tests may run elsewhere)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _debug(ctx) -> bool:
    return bool(ctx.obj and ctx.obj.get("debug")) or os.environ.get("CAMCLI_DEBUG", "") not in ("", "0")


def _set_debug(ctx, param, value):
    if value:
        ctx.ensure_object(dict)["debug"] = True
        root = ctx.find_root()
        root.ensure_object(dict)["debug"] = True
    return value


debug_option = click.option("--debug", is_flag=True, expose_value=False, callback=_set_debug, is_eager=True,
                            help="Show full tracebacks instead of one-line errors.")


@click.group(cls=CamcliGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="camcli")
@debug_option
def cli():
    """Class activation maps (CAM, Grad-CAM) for Keras image classifiers.

    \b
    Example:
      camcli explain cat.jpg --layer block5_conv3
      camcli explain photos/ --model demo --out results/
    """


# --- options shared by several commands ---------------------------------------------------------------


def _stack(*options):
    def apply(function):
        for option in reversed(options):
            function = option(function)
        return function

    return apply


def shard_callback(ctx, param, value):
    """--shard K/N -> (K, N), 1 <= K <= N (camcli.options.parse_shard), as a usage error of the option."""
    try:
        return parse_shard(value)
    except UsageError as error:
        raise click.BadParameter(str(error)) from None


def option_groups(options: dict, *groups: type) -> list:
    """The option groups a command's parsed options make: each group takes the options named as its
    fields (SanityOptions' spelled with its `sanity_` prefix), and is checked as it is made."""
    made = []
    for group in groups:
        prefix = getattr(group, "cli_prefix", "")
        given = {name: options.pop(prefix + name) for name in field_names(group) if prefix + name in options}
        made.append(group(**given))
    return made


def flag_options(group: type):
    """A --flag for every true-or-false field of `group` that the command line shows, with the field's help
    (camcli.options): a new per-map file (FileOptions.save_...) is an option of `explain` by itself."""
    return _stack(*(click.option("--" + item.name.replace("_", "-"), is_flag=True, help=item.metadata["help"])
                    for item in dataclasses.fields(group)
                    if isinstance(item.default, bool) and item.metadata.get("cli", True)))


model_options = _stack(
    click.option("--model", default=field_default(ModelOptions, "model"), show_default=True,
                 metavar="NAME|FILE|hub:PRESET",
                 help="A built-in model (see `camcli models`), a .keras/.h5 file, or hub:PRESET, a KerasHub "
                      "image classifier (needs keras-camcli[hub]): a preset name such as resnet_50_imagenet, a "
                      "kaggle:// or hf:// handle (from KerasHub's cache), or a folder save_to_preset wrote."),
    click.option("--weights", metavar="FILE|none",
                 help="Built-in models: a local weights file, or `none` for random weights "
                      "(smoke tests, benchmarks). Default: Keras' ImageNet weights from $KERAS_HOME/models."),
    click.option("--preprocess", type=click.Choice(catalog.PREPROCESS_MODES),
                 help="Model files: how pixels are scaled (keras.applications modes, scale01 = x/255, "
                      "none = raw 0..255). Default: none; for hub: presets, their image converter's."),
    click.option("--labels", "labels_file", type=GivenPath("file", dir_okay=False),
                 help="Model files and hub: presets: class names, one per line."),
    click.option("--unsafe-load", is_flag=True,
                 help="Allow model files that contain code (Lambda layers). Only for files you trust."),
    click.option("--input", "image_input", metavar="NAME",
                 help="Model files with several inputs: the image input; the others come from --extra-inputs."),
    click.option("--extra-inputs", type=GivenPath("file", dir_okay=False), metavar="FILE",
                 help="The other inputs of each image: a CSV (an `image` column and one column per input, values "
                      "separated by spaces) or JSON table, keyed by image path."),
    click.option("--output", metavar="NAME",
                 help="Model files with several outputs: the output to explain; the others are ignored."),
    debug_option,
)

token_grid_option = click.option(
    "--token-grid", metavar="HxW",
    help="Token layers (vision transformers): the patch grid their tokens are reshaped to; the tokens before "
         "the last HxW (class, distillation, register tokens) are dropped. Default: from the input and patch "
         "sizes.")

map_options = _stack(
    click.option("--layer", "layers", multiple=True,
                 help="Layer to explain; `outer/inner` inside nested models. Repeatable: the maps of several "
                      "layers are fused (mean of the per-layer maps). Default: the last spatial layer before "
                      "the head (see `camcli layers`)."),
    click.option("--method", "methods", multiple=True, type=MethodChoice(),
                 help="Mapping method (see `camcli methods`); repeat to run several in one pass (they share one "
                      "forward and backward pass per batch). Default: gradcam."),
    click.option("--head", type=click.Choice(HEADS), default=field_default(MapRequest, "head"), show_default=True,
                 help="How scores come from the model's output; auto reads the final activation."),
    click.option("--precision", type=click.Choice(PRECISIONS, case_sensitive=False),
                 default=field_default(MapRequest, "precision"), show_default=True,
                 help="The model's compute dtype. bfloat16: about 2x faster on CPUs with AVX512_BF16 or AMX and "
                      "on GPUs, maps within the README's bound; float16: for GPUs. Runs on a copy of the model; "
                      "the maps' arithmetic is float32 in all."),
    click.option("--batch-size", type=click.IntRange(min=1), default=field_default(RunOptions, "batch_size"),
                 show_default=True,
                 help="Images per compiled step. Memory grows with it; Score-CAM's masked copies go 32 per pass "
                      "whatever it is."),
    click.option("--box-threshold", type=click.FloatRange(0, 1), default=field_default(FileOptions, "box_threshold"),
                 show_default=True,
                 help="A map's box: its largest connected region at or above this fraction of its maximum "
                      "(CAM paper)."),
)


label_map_options = _stack(
    click.option("--bg-threshold", type=click.FloatRange(0, 1), metavar="T",
                 help="Label maps: the background's score; a pixel takes the class whose normalised map is highest "
                      f"there when that map is above T. Default: {DEFAULT_BG_THRESHOLD} (chosen on the demo's "
                      "validation scenes, see `make bench-segmentation`)."),
    click.option("--refine", type=click.Choice(REFINEMENTS), default=field_default(FileOptions, "refine"),
                 show_default=True,
                 help="Label maps: pull the maps onto the image's edges first. slic: each map's mean in SLIC "
                      "superpixels; randomwalk: a random walk from confident seeds; crf: a dense CRF (needs "
                      "keras-camcli[crf]). slic and randomwalk need keras-camcli[segment]."),
)


sanity_options = _stack(
    click.option("--sanity", is_flag=True,
                 help="Also run the model-parameter randomisation test (Adebayo et al. 2018): re-initialise a copy of "
                      "the model's weighted layers from the top down and measure how similar each method's maps stay "
                      "(rank correlation, SSIM). Prints a table, writes OUT/sanity.json; gate it with --fail-under "
                      "sanity=VALUE (every method's score: 1 - the mean rank correlation of |map| over the randomised "
                      "depths)."),
    click.option("--sanity-images", type=click.IntRange(min=1), default=field_default(SanityOptions, "images"),
                 show_default=True, metavar="N",
                 help="--sanity: explain the first N images, on the trained model and at each of 6 depths."),
)
def sanity_plan(options: dict) -> SanityOptions | None:
    """Take --sanity, --sanity-images and every `--fail-under sanity=VALUE` out of a command's options
    (its own gates never see them) and check, before any work, that the check can run. Returns the
    check's SanityOptions (None without --sanity); `run_sanity_from_cli` runs it."""
    from camcli.audit import sanity

    enabled = options.pop("sanity")
    [plan] = option_groups(options, SanityOptions)
    fail_under, fail_over = options.get("fail_under", ()), options.get("fail_over", ())
    gates, options["fail_under"] = sanity.split_sanity_gates(fail_under, fail_over)
    if gates and not enabled:
        raise UsageError(f"--fail-under {gates[0].text} needs --sanity")
    if not enabled:
        return None
    sanity.require_packages_for_sanity()
    sanity.check_sanity_file(options["out"])
    return replace(plan, fail_under=[gate.text for gate in gates])


def sanity_model(plan: SanityOptions | None, model: ModelOptions) -> ModelOptions:
    """The command's model, loaded where `plan` runs the sanity check after the command's own work: one load for
    both, and a model the check refuses (an object detector) stops the command before that work."""
    if plan is None:
        return model
    from camcli.audit import sanity

    return ModelOptions(model=sanity.check_model(model.load()))


def run_sanity_from_cli(paths, plan: SanityOptions | None, model: ModelOptions, maps: MapRequest,
                        run: RunOptions) -> int:
    """Run the check `sanity_plan` prepared on the command's images, with its model, maps and run: print its
    table and closing lines. With the command's `report`, its page (written before the check ran) is
    written again, with the check's section. Returns EXIT_FAILED when a gate failed or an image could not
    be read, else 0."""
    if plan is None:
        return 0
    from camcli.api import sanity_paths, write_report
    from camcli.audit.sanity import format_sanity_table

    page = run.report and run.out is not None
    run = RunOptions(out=run.out, batch_size=run.batch_size)  # the rest (--report, --resume) is the command's
    report = sanity_paths(paths, model, sanity=plan, maps=maps, run=run)
    click.echo("\n" + format_sanity_table(report))
    for line in report.closing_lines(run.out):
        click.echo(f"camcli: {line}", err=True)
    if page:  # else the page shows no sanity section, or the sanity.json of an earlier run
        write_report(run.out)
    return EXIT_FAILED if report.failed_gates or report.failures else 0


def out_option(help_text: str):
    return click.option("--out", type=out_folder(),
                        default=field_default(RunOptions, "out"), show_default=True, help=help_text)


@contextlib.contextmanager
def stop_on_signals(say):
    """SIGINT and SIGTERM set the yielded event (the run finishes its batch and writes its summary);
    a second one stops at once. `caught` in the event's attributes names the first signal."""
    stop = threading.Event()
    stop.signal = None

    def handle(signum, frame):
        if stop.is_set():
            raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt
        stop.signal = signum
        stop.set()
        name = "interrupted" if signum == signal.SIGINT else "terminated (SIGTERM)"
        say(f"camcli: {name}: finishing the current batch (again to stop now)")

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class Progress:
    """A tqdm bar on stderr (only on a terminal), and the failure lines printed above it."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.bar = None

    def start(self, total):
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="img", file=sys.stderr, disable=self.quiet or not sys.stderr.isatty())

    def update(self, count: int):
        if self.bar is not None:
            self.bar.update(count)

    def say(self, line: str):
        (self.bar.write if self.bar is not None else click.echo)(line, file=sys.stderr)

    def failure(self, image: str, reason: str):
        context = click.get_current_context(silent=True)
        self.say(f"camcli: failed: {image}: {cli_terms(reason, context.command if context else None)}")

    def hooks(self, stop: threading.Event | None = None) -> RunHooks:
        return RunHooks(on_start=self.start, on_progress=self.update, on_failure=self.failure, stop=stop)

    def close(self):
        if self.bar is not None:
            self.bar.close()


# --- explain ----------------------------------------------------------------------------------------------


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=GivenPath("image or folder", path_type=Path))
@model_options
@map_options
@click.option("--aug-smooth", is_flag=True,
              help="Average the maps of flipped and zoomed copies (6 passes per image): smoother, better centred.")
@click.option("--eigen-smooth", is_flag=True,
              help="Reduce the method's weighted activations by their first principal component (less noise).")
@click.option("--max-channels", type=click.IntRange(min=1), metavar="N",
              help="scorecam, sscam, iscam, ablationcam: score only the N channels whose activation varies most "
                   "(Faster Score-CAM): N masked or ablated copies per image, times the method's samples (`camcli "
                   "methods`), and the baseline, 32 at a time, so memory does not grow with --batch-size. "
                   "Default: every channel.")
@click.option("--class", "classes", multiple=True, metavar="CLASS",
              help="Class to explain: index, label (case-insensitive) or top1..topK. Repeatable; "
                   "each class gets its own map. Default: top1.")
@click.option("--compare-with", multiple=True, metavar="CLASS",
              help="finercam: a class (index or label) to compare each explained class against. Repeatable. "
                   "Default: the 3 classes whose scores lie nearest the explained class's.")
@click.option("--target", type=click.Choice(TARGETS), default=field_default(MapRequest, "target"),
              show_default=True,
              help="What the maps explain. class: the class score before the softmax. region (segmentation "
                   "models): the class's pre-softmax scores summed over the pixels predicted as it, or over "
                   "--target-mask. box (object detectors, hub:PRESET): each detection, its class logit at the "
                   "anchor that produced it; --class keeps a class's detections or the K best (topK). value, "
                   "increase, decrease (regression outputs; the classes are the output's units): what supports the "
                   "value as it is, what raises it, what lowers it.")
@click.option("--target-mask", type=GivenPath("file", dir_okay=False), metavar="FILE",
              help="--target region: an image whose nonzero pixels are the region, for every image.")
@click.option("--min-score", type=click.FloatRange(0, 1), metavar="S",
              help="--target box: explain the detections the detector scores above S (its confidence, after the "
                   "sigmoid). Default: the detector's own threshold.")
@click.option("--box-overlap", type=click.FloatRange(0, 1), metavar="IOU",
              help="--target box: differentiate the sum of the detection's class logits over every raw prediction "
                   "whose box overlaps the detection's with IoU >= IOU (pytorch-grad-cam's box-score target), "
                   "instead of the logit at the anchor that produced it.")
@token_grid_option
@click.option("--top-k", type=click.IntRange(min=1),
              help="Predictions recorded per image. Default: 5 (or every class, when there are fewer).")
@out_option("Output folder (mirrors the input tree). camcli never replaces a file it did not write.")
@click.option("--alpha", type=click.FloatRange(0, 1), default=field_default(FileOptions, "alpha"), show_default=True,
              help="Heatmap opacity in the overlays.")
@click.option("--colormap", default=field_default(FileOptions, "colormap"), show_default=True,
              help="Any matplotlib colour map name.")
@click.option("--format", "overlay_format", type=click.Choice(OVERLAY_FORMATS),
              default=field_default(FileOptions, "overlay_format"),
              show_default=True,
              help="Overlay file format. auto: JPEG (quality 90) for JPEG, HEIC and AVIF photos, PNG for lossless "
                   "inputs. Masks and panels are always PNG.")
@click.option("--max-size", type=click.IntRange(min=16), metavar="N",
              help="Longest side of overlays, masks, panels and saved heatmaps, in pixels (JPEG photos are then "
                   "decoded at a reduced size, much faster). The JSON's peak and bbox stay in original pixels. "
                   "Default: the original size.")
@click.option("--max-pixels", type=click.IntRange(min=1), metavar="N",
              help="Decode images of up to N pixels (default 89478485, Pillow's limit against decompression "
                   "bombs): lifts the limit on purpose, e.g. for a panorama.")
@flag_options(FileOptions)
@label_map_options
@click.option("--report", is_flag=True, help="Write OUT/index.html, a page of every image, map and failure.")
@click.option("--fail-fast", is_flag=True, help="Stop at the first image that fails: nothing after it is explained.")
@click.option("--resume", is_flag=True,
              help="Skip images an earlier run completed with the same model, weights, options and camcli "
                   "version; recompute the others.")
@click.option("--shard", callback=shard_callback, metavar="K/N",
              help="Explain only shard K of N (1 <= K <= N), split by relative path: N processes (job "
                   "array tasks, GPUs) cover every image once. Writes summary.K-of-N.json.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no closing line.")
@click.option("--json", "print_json", is_flag=True, help="Print the run summary as JSON on stdout.")
@click.pass_context
def explain(ctx, paths, quiet, print_json, **options):
    """Write heatmap overlays and top-k predictions for images and folders.

    PATHS are image files or folders (searched recursively; images are recognised by content). For
    `<root>/a/cat.jpg` the outputs are `OUT/a/cat.json` and `OUT/a/cat.<method>.<class>.png`.
    Exit status: 0 all images explained, 1 some failed (the rest are written), 2 usage error,
    130/143 interrupted by SIGINT/SIGTERM (the summary is written).

    \b
    Example:
      camcli explain cat.jpg --layer block5_conv3 --class tabby --class top2
    """
    from camcli.api import explain_paths

    model, maps, files, run = option_groups(options, ModelOptions, MapRequest, FileOptions, RunOptions)
    progress = Progress(quiet)
    try:
        with stop_on_signals(progress.say) as stop:
            summary = explain_paths(paths, model, maps=maps, files=files, run=replace(run, debug=_debug(ctx)),
                                    hooks=progress.hooks(stop))
    finally:
        progress.close()
    _finish_explain(summary, run, quiet, print_json, stop)


def _finish_explain(summary, run: RunOptions, quiet, print_json, stop):
    if print_json:
        click.echo(json.dumps(summary.as_record(run.shard), indent=2))
    if summary.report_path is not None and not quiet:
        click.echo(f"camcli: report: {summary.report_path}", err=True)
    if not quiet:
        resumed = f", {summary.skipped} unchanged and skipped" if run.resume else ""
        recomputed = f", {summary.recomputed} recomputed" if summary.recomputed else ""
        untried = summary.images - summary.ok - summary.failed  # a stopped or interrupted run never got to them
        untried = f", {untried} not tried" if untried > 0 else ""
        click.echo(f"camcli: explained {summary.explained} of {summary.images} images ({summary.failed} failed"
                   f"{resumed}{recomputed}{untried}) with {summary.run['method']} at {summary.run['layer']} in "
                   f"{summary.elapsed_seconds:.1f} s ({summary.images_per_second:.1f} images/s) -> {run.out}",
                   err=True)
        warning = summary.as_record().get("warning")  # random weights: the summary's warning, in the CLI's terms
        if warning:
            click.echo(f"camcli: warning: {cli_terms(warning, click.get_current_context().command)}", err=True)
    if summary.stopped:
        click.echo(f"camcli: error: {cli_terms(summary.stopped, click.get_current_context().command)}", err=True)
    exit_if_interrupted(summary.interrupted, stop)
    sys.exit(EXIT_FAILED if summary.failed or summary.stopped else 0)


# --- evaluate -------------------------------------------------------------------------------------------


@cli.command("evaluate")
@click.argument("paths", nargs=-1, required=True, type=GivenPath("image or folder", path_type=Path))
@click.option("--truth", type=GivenPath("file or folder", path_type=Path), metavar="FILE|DIR",
              help="Ground-truth boxes: CSV image,x0,y0,x1,y1[,label] (pixels, x1/y1 exclusive), JSON "
                   "{\"img.jpg\": [{\"box\": [x0, y0, x1, y1], \"label\": \"cat\"}]}, or a folder of Pascal VOC XML.")
@click.option("--truth-masks", type=GivenPath("folder", path_type=Path), metavar="DIR",
              help="Instead of --truth: pixel masks, PASCAL VOC SegmentationClass PNGs named as the images "
                   "(0 background, k the model's class k - 1, 255 ignored; binary 0/255 masks need --mask-labels "
                   "with the line 255,CLASS). Each image's truth classes' maps become "
                   "a label map (--bg-threshold, --refine), scored by IoU per class and mIoU, with a sweep of the "
                   "background threshold.")
@click.option("--mask-labels", type=GivenPath("file", dir_okay=False), metavar="FILE",
              help="--truth-masks: the class of each mask value, VALUE,CLASS lines (for masks not numbered as the "
                   "model's classes); for binary 0/255 masks, the line 255,CLASS (e.g. 255,cat).")
@label_map_options
@model_options
@map_options
@out_option("Folder for evaluation.json and evaluation.csv.")
@click.option("--steps", type=click.IntRange(min=0), default=field_default(ScoringOptions, "steps"), show_default=True,
              help="Deletion/insertion steps (2 x (steps + 1) forward passes per image and method); 0 skips them.")
@click.option("--road", is_flag=True, default=field_default(ScoringOptions, "road"),
              help="ROAD (Rong et al. 2022): roadmorf, roadlerf and roadcombined, the score change as 10%, ..., 90% "
                   "of the pixels, most or least relevant first, are replaced by noisy linear imputation "
                   "(18 imputed copies per image and method).")
@click.option("--random-logit", is_flag=True, default=field_default(ScoringOptions, "random_logit"),
              help="Quantus's random logit test (Sixt et al. 2020): random_logit, the SSIM of each map with the map "
                   "of a random other class (seeded as Quantus); lower is better. One more explanation per image; "
                   "needs scikit-image.")
@click.option("--pointing-tolerance", type=click.FloatRange(min=0),
              default=field_default(ScoringOptions, "pointing_tolerance"),
              show_default=True,
              help="Pointing game: a peak this many pixels outside a box still hits (Zhang et al. use 15).")
@click.option("--explain-class", type=click.Choice(EXPLAIN_CLASSES),
              default=field_default(ScoringOptions, "explain_class"),
              show_default=True,
              help="Whose map is scored against the boxes: the model's top-1 class (what it decided on; catches a "
                   "model that looks at a watermark) or the truth label's (ground-truth-known pointing game).")
@click.option("--fail-under", multiple=True, metavar="METRIC=VALUE",
              help="Exit 1 when a higher-is-better metric (pointing, energy, iou, corloc, insertion, "
                   "confidence_increase, roadlerf, roadcombined; with --sanity, sanity) is below VALUE for any "
                   "method. Repeatable.")
@click.option("--fail-over", multiple=True, metavar="METRIC=VALUE",
              help="Exit 1 when a lower-is-better metric (loc_error, deletion, roadmorf, average_drop, random_logit) "
                   "is above VALUE for any method. Repeatable.")
@sanity_options
def evaluate_command(paths, **options):
    """Score heatmaps against ground-truth boxes (localization and faithfulness) and gate CI on them.

    Prints a table of metrics per method (fractions in [0, 1]; ROAD, confidence_change and random_logit in
    [-1, 1]) and writes OUT/evaluation.json and
    OUT/evaluation.csv. Each image's boxes are scored against the map of its top-1 class, or with
    --explain-class truth of the boxes' label; images without truth are listed and skipped.
    With --truth-masks instead of --truth, each image's truth classes' maps become a label map scored
    against its mask: IoU per class, mIoU (--fail-under miou=VALUE) and the background-threshold sweep.
    With --sanity, the model-parameter randomisation test runs next on the same images, model, layer
    and methods, and writes OUT/sanity.json.
    Exit status: 0 every gate passed, 1 a gate failed or an image could not be read, 2 usage error
    (also a mask of the wrong size, or a mask value that names no class), 130/143 interrupted by
    SIGINT/SIGTERM (evaluation.json of the images so far says interrupted: true and passed: false).

    \b
    Example:
      camcli evaluate sample_images/generated --truth sample_images/generated/truth.csv \\
          --model demo --method gradcam --method cam --fail-under pointing=0.8
      camcli evaluate sample_images/generated --truth sample_images/generated/truth.csv \\
          --model demo --method gradcam --method guidedbackprop --sanity --fail-under sanity=0.5
      camcli evaluate scenes --truth-masks scenes/masks --model demo --method gradcam \
          --refine randomwalk --fail-under miou=0.6
    """
    from camcli.api import evaluate_paths
    from camcli.evaluate import evaluation, masks

    format_table = masks.format_mask_table if options["truth_masks"] is not None else evaluation.format_box_table

    sanity = sanity_plan(options)
    model, maps, files, run, scoring = option_groups(options, ModelOptions, MapRequest, FileOptions, RunOptions,
                                                     ScoringOptions)
    model = sanity_model(sanity, model)
    progress = Progress()
    try:
        with stop_on_signals(progress.say) as stop:
            report = evaluate_paths(paths, model, scoring=scoring, maps=maps, files=files, run=run,
                                    hooks=progress.hooks(stop))
    finally:
        progress.close()
    _finish_evaluate(report, format_table, run, stop)
    sanity_failed = run_sanity_from_cli(paths, sanity, model, maps, run)
    sys.exit(EXIT_FAILED if report.failed_gates or report.failures or sanity_failed else 0)


def _finish_evaluate(report, format_table, run: RunOptions, stop) -> None:
    click.echo(format_table(report))
    for line in report.closing_lines(run.out):
        click.echo(f"camcli: {cli_terms(line, click.get_current_context().command)}", err=True)
    exit_if_interrupted(report.interrupted, stop)  # no gate passes, and no sanity check runs, on a partial run


def exit_if_interrupted(interrupted: bool, stop) -> None:
    """One rule for every command: a run that SIGINT or SIGTERM stopped exits 130 or 143."""
    if interrupted:
        sys.exit(EXIT_SIGNAL_BASE + (stop.signal or signal.SIGINT))


# --- audit ----------------------------------------------------------------------------------------------


def _rule_option(field: str, help: str):
    """A threshold of the audit's flag rule (camcli.audit.rule.FlagRule): --FIELD, a share in [0, 1], its default
    AuditOptions'."""
    return click.option(f"--{field.replace('_', '-')}", type=click.FloatRange(0, 1),
                        default=field_default(AuditOptions, field), show_default=True, help=help)


@cli.command("audit")
@click.argument("paths", nargs=-1, required=True, type=GivenPath("image or folder", exists=True, path_type=Path))
@model_options
@map_options
@token_grid_option
@click.option("--out", type=out_folder(),
              help="Images: the folder they are explained into (default camcli_out). An explain output "
                   "folder given as PATHS is audited in place.")
@click.option("--by", type=click.Choice(AUDIT_GROUPINGS), default=field_default(AuditOptions, "by"), show_default=True,
              help="Group images by the model's top-1 class (its map), or by their truth label (--truth-labels; "
                   "the truth class's map).")
@click.option("--truth-labels", type=GivenPath("file", dir_okay=False), metavar="FILE",
              help="A CSV with image and label columns: --by truth groups by it; clusters get a label purity.")
@click.option("--neighbours", type=click.IntRange(min=2), default=field_default(AuditOptions, "neighbours"),
              show_default=True,
              help="k of the k-nearest-neighbour affinity graph.")
@_rule_option("max_share",
              "Flag rule where the images cannot be read (the border rule): a cluster holds at most this share of its "
              "class (small).")
@_rule_option("min_tightness", "Flag rule: its maps' mean cosine similarity to their mean (tight).")
@_rule_option("min_away",
              "Flag rule where the images cannot be read (the border rule): its border share exceeds the rest of the "
              "class's by this much (away).")
@_rule_option("max_spread",
              "Flag rule: maps pile up in one place when their peaks lie this close, a share of the map's side (2 of "
              "32 cells).")
@_rule_option("min_pattern",
              "Flag rule: a picture carries a mark when its pixels where its map peaks are this alike to the others' "
              "(a repeated pattern: a tag, a logo, a watermark).")
@_rule_option("min_distinct",
              "Flag rule: the pictures that carry a mark make up at least this share of them and the pictures that "
              "come near it (a copied mark matches or does not; an object's look varies).")
@_rule_option("min_reliance",
              "Flag rule, when the audit has the model: pasting the mark into pictures of other classes turns at "
              "least this much more of them into the class than pasting the same place of other pictures (with one "
              "class: covering the mark changes this share of its answers).")
@_rule_option("min_reliance_not_distinct",
              "Flag rule, when the audit has the model: the same, for a mark whose pattern is not distinct "
              "(--min-distinct): the model, not the pattern, must tell it from an object's part.")
@click.option("--seed", type=int, default=field_default(AuditOptions, "seed"), show_default=True,
              help="Seed of the clustering and the t-SNE picture.")
@click.option("--report", is_flag=True,
              help="Also write OUT/index.html, with the audit's section (and with --sanity the sanity check's, "
                   "once it has run).")
@click.option("--fail-on-flag", is_flag=True, help="Exit 1 when any cluster is flagged (CI).")
@sanity_options
@click.option("--fail-under", multiple=True, metavar="sanity=VALUE",
              help="With --sanity: exit 1 when any method's sanity score is below VALUE.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no closing line.")
@click.option("--json", "print_json", is_flag=True, help="Print audit.json on stdout instead of the table.")
@click.pass_context
def audit_command(ctx, paths, quiet, print_json, fail_on_flag, **options):
    """Find a model's strategies per class, and the shortcuts among them, without boxes (SpRAy).

    PATHS: an output folder of `camcli explain --save-heatmap` (audited in place), or images and
    folders (explained first into --out, maps saved). Per class, each map is shrunk to 32x32; a
    k-nearest-neighbour graph, the eigengap of its Laplacian and spectral clustering find the
    class's strategies (Lapuschkin et al. 2019). A cluster is flagged when it is small, tight and
    its mass sits at the border, away from where the rest of the class looks. Writes OUT/audit.json,
    OUT/audit.csv and each cluster's mean map, OUT/audit.<class>.<cluster>.png.
    Exit status: 0 done, 1 a cluster was flagged with --fail-on-flag (or images failed), 2 usage error,
    130/143 interrupted by SIGINT/SIGTERM (audit.json of the maps so far says interrupted: true).

    \b
    Example:
      camcli audit scenes/ --model demo-cheat --fail-on-flag
    """
    from camcli.api import audit_paths

    audited = options["methods"][0] if options["methods"] else None  # the first --method's maps are audited
    sanity = _audit_sanity_plan(paths, options)
    model, maps, files, run, audit = option_groups(options, ModelOptions, MapRequest, FileOptions, RunOptions,
                                                   AuditOptions)
    progress = Progress(quiet)
    try:
        with stop_on_signals(progress.say) as stop:
            report = audit_paths(paths, model, audit=replace(audit, method=audited), maps=maps, files=files,
                                 run=replace(run, debug=_debug(ctx)), hooks=progress.hooks(stop))
    finally:
        progress.close()
    _finish_audit(report, quiet, print_json)
    exit_if_interrupted(report.interrupted, stop)  # --fail-on-flag never passes on the maps of part of the images
    sanity_failed = run_sanity_from_cli(paths, sanity, model, maps, replace(run, out=report.paths["json"].parent))
    failed = report.explain_summary.failed if report.explain_summary is not None else 0
    sys.exit(EXIT_FAILED if (fail_on_flag and report.flagged) or failed or sanity_failed else 0)


def _finish_audit(report, quiet: bool, print_json: bool) -> None:
    from camcli.audit.folder import flagged_lines, format_audit_table

    click.echo(json.dumps(report.record(), indent=2) if print_json else format_audit_table(report))
    if quiet:
        return
    for line in flagged_lines(report):
        click.echo(f"camcli: {line}", err=True)
    click.echo(f"camcli: audited {sum(len(m) for m, _ in report.classes)} maps of {len(report.classes)} classes "
               f"({report.folder.method} at {report.folder.layer}) in {report.seconds:.1f} s: "
               f"{len(report.flagged)} clusters flagged -> {report.paths['json']}", err=True)
    skipped = ", ".join(f"{count} {why}" for why, count in report.folder.skipped.items())
    if skipped:
        click.echo(f"camcli: not audited: {skipped}", err=True)
    if report.interrupted:
        click.echo("camcli: interrupted: the audit covers the images explained before the signal; audit.json says "
                   "interrupted: true", err=True)


def _audit_sanity_plan(paths, options: dict) -> dict | None:
    """The sanity check's plan for `audit` (cli.sanity_plan); audit's only gate is sanity=VALUE, and the
    check needs the images and the model, not an explain folder."""
    from camcli.audit.folder import is_explain_folder

    if options["sanity"] and len(paths) == 1 and is_explain_folder(Path(paths[0])):
        raise UsageError(f"--sanity explains images on randomised copies of the model, and {paths[0]} is an "
                         "explain output folder: give the images and the model instead")
    if options["sanity"] and options["out"] is None:
        options["out"] = Path("camcli_out")  # where audit_paths explains the images; sanity.json goes beside
    plan = sanity_plan(options)
    others = options.pop("fail_under")
    if others:
        raise UsageError(f"--fail-under {others[0]}: audit gates only the sanity score (sanity=VALUE); "
                         "gate localization metrics with `camcli evaluate`")
    return plan


# --- the output folder ----------------------------------------------------------------------------------


@cli.command()
@click.argument("out_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "print_json", is_flag=True, help="Print the merged summary as JSON on stdout.")
@debug_option
def summary(out_dir, print_json):
    """Merge the shard summaries in OUT_DIR into summary.json and report missing shards.

    Exit status 0 when every shard is present and no image failed, 1 otherwise.

    \b
    Example:
      camcli summary results/
    """
    from camcli.api import merge_summaries

    merged = merge_summaries(out_dir)
    if print_json:
        click.echo(json.dumps(merged, indent=2))
    else:
        shards = f" from {merged['shards']} shards" if merged.get("shards") else ""
        click.echo(f"{merged['images']} images{shards}: {merged['ok']} ok, {merged['failed']} failed")
        for failure in merged["failures"]:
            click.echo(f"  failed: {failure.get('image')}: {failure.get('error')}")
        if merged["missing_shards"]:
            missing = ", ".join(f"{k}/{merged['shards']}" for k in merged["missing_shards"])
            click.echo(f"missing shards: {missing}")
    sys.exit(EXIT_FAILED if merged["failed"] or merged["missing_shards"] else 0)


@cli.command("report")
@click.argument("out_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--title", help="Page title. Default: \"camcli report: <folder name>\".")
@debug_option
def report_command(out_dir, title):
    """Write OUT_DIR/index.html: a self-contained page of the images, overlays, top-k and failures.

    Works on any `camcli explain --out` folder, shards included; small JPEG thumbnails are written
    next to the overlays (and reused on the next run). Open the page from disk; it needs no network.

    \b
    Example:
      camcli report results/ --title "Holiday photos, VGG16"
    """
    from camcli.api import write_report

    click.echo(write_report(out_dir, title))


# --- what is there ----------------------------------------------------------------------------------------


@cli.command()
@model_options
@token_grid_option
def layers(**options):
    """List the layers that can be explained (4-D outputs, and token layers reshaped onto their patch
    grid); `*` marks the default.

    \b
    Example:
      camcli layers --model resnet50
    """
    from camcli.api import list_layers

    rows = list_layers(options.pop("model"), **options)
    width = max(len(row.path) for row in rows)
    type_width = max(len(row.type_name) for row in rows)
    shape_width = max(len(row.shape) for row in rows)
    for row in rows:
        line = f"{'*' if row.default else ' '} {row.path:<{width}}  {row.type_name:<{type_width}}  {row.shape}"
        click.echo(f"{line:<{width + type_width + shape_width + 6}}  {row.reshape}".rstrip() if row.reshape else line)


@cli.command()
@debug_option
def models():
    """List the built-in models: input size, default layer, and whether CAM applies; the default
    `--model` says so.

    \b
    Example:
      camcli models
    """
    entries = catalog.listed_models()
    width = max(len(e.name) for e in entries)
    layer_width = max(len(e.default_layer) for e in entries)
    click.echo(f"{'name':<{width}}  {'input':>7}  {'default layer':<{layer_width}}  cam  description")
    for e in entries:
        size = f"{e.input_size}x{e.input_size}"
        default = "; the default --model" if e.name == catalog.DEFAULT_MODEL else ""
        click.echo(f"{e.name:<{width}}  {size:>7}  {e.default_layer:<{layer_width}}  {'yes' if e.cam else 'no ':<3}  "
                   f"{e.summary}{default}")


@cli.command()
@click.option("--markdown", is_flag=True, help="Print the table as Markdown (as in the README).")
@debug_option
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


def main():
    try:
        cli(prog_name="camcli", obj={})
    except UsageError:  # only with --debug does one get here: its traceback, and still the usage error's status
        traceback.print_exc()
        sys.exit(EXIT_USAGE)


if __name__ == "__main__":
    main()
