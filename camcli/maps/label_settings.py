"""The maps' settings that the command line shows: plain constants, no numpy, so that `camcli --help`
stays fast. camcli.maps.boxes, camcli.maps.segmentation and camcli.maps.refine use them, and
camcli.options takes its defaults from them."""

# A map's box: its largest connected region at or above this fraction of its maximum (the CAM paper's
# 20%, Zhou et al. 2016, section 4.1).
DEFAULT_BOX_THRESHOLD = 0.2

# The background's score in a label map (camcli.maps.segmentation.label_map): a pixel is background
# unless some normalised map is above it. Chosen on the demo's validation scenes (`make
# bench-segmentation`, benchmarks/segmentation.py, 100 scenes of seed 8101), where it gave the best mIoU of the
# unrefined gradcam seeds (IRN evaluates its sharper CAMs at 0.15; at 0.15 camcli's seeds, upsampled
# from a 12x12 grid, cover far more than the object). Other models' best thresholds differ: the sweep
# of `evaluate --truth-masks` shows yours.
DEFAULT_BG_THRESHOLD = 0.5

# How maps are refined along the image's edges before labelling (camcli.maps.refine).
REFINEMENTS = ("none", "slic", "randomwalk", "crf")

# Label maps are computed on the picture at most this many pixels on its longest side, then enlarged
# to the original size (nearest neighbour, so every pixel keeps one class): `explain
# --save-segmentation` and `evaluate --truth-masks` alike. The maps come from grids of 7x7 to 28x28
# cells, so a finer picture adds little, and the refinements' cost grows with the pixels (a random
# walk on a 12 MP photo at full size would take minutes).
SEGMENTATION_SIDE = 512
