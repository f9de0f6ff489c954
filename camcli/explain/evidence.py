"""The shared numpy work between the compiled step and a method's maps (methods.Evidence).

For a layer method, `BatchEvidence.layer_maps` builds each explained layer's `MapInputs` from the
step outputs, lets the method compute its raw map, scales each layer's map to [0, 1] (ReLU first),
fuses several layers on the finest layer's grid (the mean of their unit maps) and, with
--aug-smooth, averages the maps of the augmented copies warped back onto the original's grid. For
the guided methods it hands over the batch's guided input gradient. numpy and Pillow only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from camcli.explain.augment import AUGMENTATIONS, average_maps, restore_map
from camcli.explain.methods import LayerMethod, MapInputs, MaskChanges, MethodMap
from camcli.explain.step import BatchRun, StepOutputs
from camcli.maps.overlay import normalize_map, upsample
from camcli.options import MASKED_BATCH

Unit = tuple[np.ndarray, float]  # (unit map on the finest layer's grid, raw max over the layers)


@dataclass(frozen=True)
class MapOptions:
    """The options of the shared map code: --eigen-smooth, --aug-smooth, and Score-CAM's channels and
    masked images per pass."""

    eigen_smooth: bool = False
    aug_smooth: bool = False
    max_channels: int | None = None
    score_batch_size: int = MASKED_BATCH
    compare_with: tuple[int, ...] = ()  # FinerCAM: the classes compared against (empty: the nearest)


class BatchEvidence:
    """What one explainer's method may ask for about one batch (see methods.Evidence).

    class_weights: per layer, CAM's (channels, classes) dense weights; None for other methods.
    `masked_images_scored` counts the masked copies Score-CAM ran through the model, and the ablated
    copies AblationCAM ran.
    """

    def __init__(self, run: BatchRun, options: MapOptions, class_weights: Sequence[np.ndarray] | None,
                 input_size: tuple[int, int]):
        self.run, self.options, self.class_weights = run, options, class_weights
        self.input_size = input_size
        self.masked_images_scored = 0

    def guided_gradients(self) -> np.ndarray:
        return self.run.guided_gradients()

    def full_gradient_maps(self) -> np.ndarray:
        return self.run.full_gradient_maps()

    def layer_maps(self, method: LayerMethod) -> list[list[MethodMap]]:
        """[request][image]: the method's map of each image's class, fused over the layers."""
        units = self._units(method, self.run.batch, self.run.outputs)
        if self.options.aug_smooth:
            units = self._smoothed(method, units)
        return [[_finished(unit, raw_max) for unit, raw_max in row] for row in units]

    def _smoothed(self, method: LayerMethod, units: list[list[Unit]]) -> list[list[Unit]]:
        """Each unit map averaged with those of the augmented copies, warped back; the raw max stays
        the original's. AUGMENTATIONS[0] is the identity: the original itself."""
        collected = [[[restore_map(unit, False, 1.0)] for unit, _ in row] for row in units]
        for flip, zoom in AUGMENTATIONS[1:]:
            augmented, outputs = self.run.augmented(flip, zoom)
            for row, augmented_row in zip(collected, self._units(method, augmented, outputs)):
                for maps, (unit, _) in zip(row, augmented_row):
                    maps.append(restore_map(unit, flip, zoom))
        return [[(average_maps(maps), raw_max) for maps, (_, raw_max) in zip(row, original)]
                for row, original in zip(collected, units)]

    def _units(self, method: LayerMethod, batch: np.ndarray, outputs: StepOutputs) -> list[list[Unit]]:
        """[request][image] -> (unit map on the finest layer's grid, raw max over the layers)."""
        grid = max((a.shape[1:3] for a in outputs.activations), key=lambda hw: hw[0] * hw[1])
        noise = method.input_noise
        # Smooth Grad-CAM++: the step on each noisy copy of this batch, for the same classes.
        noisy = [] if noise is None else [self.run.step.run(noise.copy(batch, m), outputs.class_ids, self.run.extras)
                                          for m in range(noise.copies)]
        gradients, products = outputs.gradients, None
        if method.second_order:  # ShapleyCAM: the ReST score's gradients and Hessian-vector products
            gradients, products = self.run.step.second_order(batch, outputs.class_ids, self.run.extras)
        if method.comparison is not None:  # FinerCAM: the gradients of the class compared with others
            nearest = min(method.comparison.classes, outputs.scores.shape[1] - 1)
            gradients = self.run.step.compared_gradients(batch, outputs.class_ids, self.options.compare_with, nearest,
                                                         method.comparison.alpha, self.run.extras)
        out = []
        for r in range(outputs.class_ids.shape[1]):
            per_layer = [method.raw_map(self._inputs(batch, outputs, (gradients, products), i, r, noisy),
                                        self.options.eigen_smooth)
                         for i in range(len(outputs.activations))]
            out.append([_fused([raw[b] for raw in per_layer], tuple(grid)) for b in range(len(batch))])
        return out

    def _inputs(self, batch: np.ndarray, outputs: StepOutputs, differentials: tuple, layer: int, request: int,
                noisy: list[StepOutputs]) -> MapInputs:
        """differentials: (per-layer gradients, per-layer Hessian-vector products or None)."""
        gradients, products = differentials
        ids = outputs.class_ids[:, request]
        return MapInputs(
            outputs.activations[layer],
            gradients[layer][:, request] if gradients else None,
            self.class_weights[layer][:, ids].T if self.class_weights is not None else None,
            lambda b, masks, changes=None: self._score_masks(batch[b], int(ids[b]), masks, self.run.extras_of(b),
                                                             changes or MaskChanges()),
            self.options.max_channels,
            lambda b, keep: self._chunked(keep, lambda part, _: self.run.step.ablated_scores(
                batch[b], part, layer, int(ids[b]), self.run.extras_of(b))),
            tuple(copy.gradients[layer][:, request] for copy in noisy) if noisy else None,
            products[layer][:, request] if products is not None else None,
        )

    def _score_masks(self, image: np.ndarray, class_index: int, masks: np.ndarray, extras,
                     changes: MaskChanges) -> np.ndarray:
        def score(chunk: np.ndarray, start: int) -> np.ndarray:
            scales, noise = changes.part(start, start + len(chunk), self.input_size)
            return self.run.step.masked_scores(image, chunk, class_index, extras, scales, noise)

        return self._chunked(masks, score)

    def _chunked(self, rows: np.ndarray, score) -> np.ndarray:
        """score(chunk, start) over `rows` in chunks of score_batch_size copies, concatenated; counted."""
        scores = []
        for start in range(0, len(rows), self.options.score_batch_size):
            chunk = rows[start: start + self.options.score_batch_size]
            scores.append(score(chunk, start))
            self.masked_images_scored += len(chunk)
        return np.concatenate(scores) if scores else np.zeros((0,), np.float32)


def _fused(raw_maps: list[np.ndarray], grid: tuple[int, int]) -> Unit:
    """One image's raw maps, one per layer, each scaled to [0, 1] and resized to `grid` (h, w), then
    averaged; with the largest raw max."""
    units, raw_max = [], 0.0
    for raw in raw_maps:
        unit, layer_max, _ = normalize_map(raw)
        units.append(unit if unit.shape == grid else upsample(unit, height=grid[0], width=grid[1]))
        raw_max = max(raw_max, layer_max)
    return (units[0] if len(units) == 1 else np.mean(units, axis=0)), raw_max


def _finished(unit: np.ndarray, raw_max: float) -> MethodMap:
    heatmap, _, empty = normalize_map(unit)  # rescale fused or averaged maps to a maximum of 1
    return MethodMap(heatmap, 0.0 if empty else raw_max, empty)
