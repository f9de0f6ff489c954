"""explain: from a preprocessed batch to labelled maps.

step.py       the compiled TensorFlow step (forward, tape, gradients) and its named, read-only outputs
forward.py    the forward pass that replays the model's graph to read layers and logits
methods.py    the method registry: each method a small numpy object (numpy only, for a fast --help)
evidence.py   the shared numpy work between the step and a method: inputs, scaling, fusion, smoothing
augment.py    --aug-smooth's flips and zooms, and mapping the maps back
classes.py    --class requests and the one rule that turns a class name or index into an index
explainer.py  Explainer (one method) and MethodSet (several methods on one step): the library API
"""
