"""KerasHub object detectors: what camcli reads of one to find and explain its detections.

A KerasHub `RetinaNetObjectDetector` is a Functional model whose outputs are its raw predictions, one
per anchor: `cls_logits` (batch, anchors, classes), the class scores before the sigmoid, and
`bbox_regression` (batch, anchors, 4), box deltas. Its `predict` decodes the deltas against its anchors
and keeps the best boxes by non-max suppression (its `prediction_decoder`). A `DFineObjectDetector` (a
detection transformer) predicts one box per query instead: `logits` (batch, queries, classes) and
`pred_boxes` (batch, queries, 4), centre and size as fractions of the input, through the same kind of
suppression. camcli runs the same decoding and the same suppression, with the decoder's own settings,
inside its compiled step, and keeps what `predict` drops: the index of the anchor or query each detection
came from. That is what ties a detection to the one score the maps differentiate.

`DetectorHead` holds the decoder's settings and the layers camcli needs; `decode_predictions` and
`suppress` are the TensorFlow side (called inside the step). KerasHub's batched suppression with
indices is a private function: `_non_max_suppression` is the one place that imports it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from camcli.errors import CamcliError, ModelLoadError
from camcli.models.keras_internals import producing_layer
from camcli.models.layers import SEPARATOR, Head, all_layers
from camcli.models.loading import index_labels

RETINANET, DFINE = "RetinaNetObjectDetector", "DFineObjectDetector"
SUPPORTED_DETECTORS = (RETINANET, DFINE)
# Each kind's raw class scores per anchor or query, before the sigmoid, and its boxes: RetinaNet's deltas
# ("center_xywh" encoded against its anchors), D-FINE's centre and size as fractions of the input.
LOGITS_OUTPUTS = {RETINANET: "cls_logits", DFINE: "logits"}
BOX_OUTPUTS = {RETINANET: "bbox_regression", DFINE: "pred_boxes"}
BOX_FORMAT = "yxyx"  # the suppression's format, in input pixels
COCO_CLASSES = 91  # torchvision's COCO indices (0 "unlabeled", 1 "person"...), as KerasHub's COCO presets use


@dataclass(frozen=True)
class DetectorHead:
    """What camcli reads of a detector. The thresholds are its prediction decoder's: `min_score` (the
    --min-score option) replaces `confidence_threshold` when given."""

    detector: str  # the KerasHub class, e.g. RetinaNetObjectDetector
    num_classes: int
    box_format: str  # the detector's own box format
    from_logits: bool  # the decoder takes a sigmoid of cls_logits for its confidences
    iou_threshold: float
    confidence_threshold: float
    max_detections: int
    anchor_generator: object = field(compare=False, repr=False)  # RetinaNet's; None for D-FINE
    logits_layer: object = field(compare=False, repr=False)  # the layer (or operation) that outputs the logits

    @property
    def logits_output(self) -> str:
        return LOGITS_OUTPUTS[self.detector]

    def forward_head(self) -> Head:
        """The head the graph replay (camcli.explain.forward) takes: the class logits, nothing stripped."""
        return Head(self.logits_layer, "sigmoid", None, False, self.num_classes)

    def settings(self) -> dict:
        """What shapes the detections, for records' fingerprints."""
        return {"detector": self.detector, "iou_threshold": self.iou_threshold,
                "confidence_threshold": self.confidence_threshold, "max_detections": self.max_detections,
                "from_logits": self.from_logits}


def is_object_detector(model) -> bool:
    """A KerasHub ObjectDetector (of any kind, supported or not)."""
    return any(cls.__name__ == "ObjectDetector" for cls in type(model).__mro__)


def detector_head(model, name: str) -> DetectorHead:
    """The DetectorHead of a KerasHub detector; ModelLoadError for a kind camcli does not explain yet."""
    kind = type(model).__name__
    if kind not in SUPPORTED_DETECTORS:
        raise ModelLoadError(f"{name} is a KerasHub {kind}; camcli explains the detections of "
                             f"{', '.join(SUPPORTED_DETECTORS)} (`target=box`)")
    decoder = model.prediction_decoder
    return DetectorHead(kind, int(model.num_classes), model.bounding_box_format, bool(decoder.from_logits),
                        float(decoder.iou_threshold), float(decoder.confidence_threshold),
                        int(decoder.max_detections), getattr(model, "anchor_generator", None),
                        producing_layer(model.output[LOGITS_OUTPUTS[kind]]))


def detector_labels(keras_hub, num_classes: int) -> list[str]:
    """COCO's names for KerasHub's 91 COCO classes, else the class indices."""
    if num_classes == COCO_CLASSES:
        return [keras_hub.utils.coco_id_to_name(i) for i in range(num_classes)]
    return index_labels(num_classes)


# D-FINE's HGNetV2 computes all its stages in one layer; its finest stage is read through this projection
# (the first of the hybrid encoder's inputs), a layer of its own.
DFINE_FINEST = "encoder_input_proj_bn_0"


def default_detector_layer(model) -> str:
    """The backbone's output at the finest pyramid level the detector reads (RetinaNet: P3, stride 8;
    D-FINE: its HGNetV2's first feature stage, stride 16, as projected for the encoder): the last layer at
    that resolution through which every detection's score flows, whatever level its anchor is on (each
    feature pyramid level feeds only its own anchors; the backbone's finest level feeds them all, through
    the pyramid's top-down path)."""
    backbone = model.backbone
    if type(model).__name__ == DFINE:
        level, layer = backbone.out_features[0], backbone.get_layer(DFINE_FINEST)
    else:
        level = f"P{backbone.min_level}"
        layer = producing_layer(backbone.image_encoder.pyramid_outputs[level])
    paths = [info.path for info in all_layers(model) if info.layer is layer]
    if not paths:
        raise CamcliError(f"cannot find the layer of the backbone's {level} output ({layer.name}) in {model.name}; "
                          "give `layers`")
    return min(paths, key=lambda path: path.count(SEPARATOR))


# --- the TensorFlow side, called inside the compiled step ----------------------------------------------------


def decode_predictions(head: DetectorHead, outputs: dict, images):
    """(boxes, logits): each anchor's (or query's) box, decoded as the detector's `decode_predictions` decodes
    it, in yxyx input pixels (batch, anchors, 4); and the class logits (batch, anchors, classes)."""
    import keras

    height, width, channels = images.shape[1], images.shape[2], images.shape[3]
    if head.detector == DFINE:  # centre and size as fractions of the input
        boxes = outputs[BOX_OUTPUTS[DFINE]] * keras.ops.convert_to_tensor([width, height, width, height], "float32")
        boxes = keras.utils.bounding_boxes.convert_format(boxes, source="center_xywh", target="xyxy")
        return keras.ops.stack([boxes[..., 1], boxes[..., 0], boxes[..., 3], boxes[..., 2]], axis=-1), \
            outputs[LOGITS_OUTPUTS[DFINE]]
    anchors = head.anchor_generator(images)
    anchors = keras.ops.concatenate(list(anchors.values()), axis=0)
    boxes = keras.utils.bounding_boxes.decode_deltas_to_boxes(
        anchors=anchors, boxes_delta=outputs[BOX_OUTPUTS[RETINANET]], encoded_format="center_xywh",
        anchor_format=head.anchor_generator.bounding_box_format, box_format=head.box_format,
        image_shape=(height, width, channels))
    boxes = keras.utils.bounding_boxes.convert_format(boxes, source=head.box_format, target=BOX_FORMAT,
                                                      height=height, width=width)
    return boxes, outputs[LOGITS_OUTPUTS[RETINANET]]


def confidences(head: DetectorHead, logits):
    """The decoder's per-class confidences: the sigmoid of the logits (or the logits, for a detector whose
    decoder takes them as probabilities)."""
    import tensorflow as tf

    return tf.sigmoid(logits) if head.from_logits else logits


def suppress(head: DetectorHead, boxes, scores, min_score: float | None):
    """(indices (batch, max_detections), count (batch,)): the detector's own non-max suppression, its IoU
    threshold and maximum, with `min_score` for its confidence threshold when given. Indices are anchors,
    best first; only the first `count` of each image are detections."""
    import tensorflow as tf

    threshold = head.confidence_threshold if min_score is None else min_score
    suppression = _non_max_suppression()

    def one_image(pair):  # KerasHub's suppression needs the batch size when traced: one image at a time
        image_boxes, image_scores = pair
        indices, count = suppression(image_boxes[tf.newaxis], image_scores[tf.newaxis],
                                     max_output_size=head.max_detections, iou_threshold=head.iou_threshold,
                                     score_threshold=threshold)
        return tf.cast(indices[0], tf.int32), tf.cast(count[0], tf.int32)

    return tf.map_fn(one_image, (boxes, scores), fn_output_signature=(tf.int32, tf.int32))


def _non_max_suppression():
    try:
        from keras_hub.src.layers.modeling.non_max_supression import non_max_suppression
    except ImportError as error:
        raise ModelLoadError(f"this keras-hub has no keras_hub.src.layers.modeling.non_max_supression."
                             f"non_max_suppression, which camcli uses to tie detections to their anchors "
                             f"({error}); install keras-hub 0.32") from None
    return non_max_suppression
