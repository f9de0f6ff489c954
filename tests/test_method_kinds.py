"""Methods own their variation: the sanity check asks a method which map it compares, and the report
reads from the record whether an overlay is a gradient picture. Neither keeps a list of method names."""

import json

import numpy as np
import pytest
from report_fixtures import write_record

from camcli.explain.methods import REGISTRY, guided_gradcam
from camcli.maps.overlay import upsample
from camcli.report.page import write_page


def _heatmap_and_gradient():
    rng = np.random.default_rng(0)
    return rng.random((4, 4)).astype(np.float32), rng.normal(size=(8, 8, 3))


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_method_says_which_map_the_sanity_check_compares(name):
    method = REGISTRY[name]
    heatmap, gradient = _heatmap_and_gradient()
    compared = method.comparable_map(heatmap, gradient if method.guided else None, (8, 8))
    if name == "guidedbackprop":  # the gradient itself, not its picture or its magnitude
        expected = gradient
    elif name == "guidedgradcam":  # the gradient times the layer map at the input's size
        expected = guided_gradcam(gradient, upsample(heatmap, height=8, width=8))
    else:  # a layer method: its heatmap
        expected = heatmap.astype(np.float64)
    np.testing.assert_allclose(compared, expected, rtol=1e-6)


def _record(out, stem, method, guided):
    """A record of one map by `method`, its "guided" field set to `guided` (left out for None)."""
    write_record(out, stem, None, [(0, 0.9)], methods=(method,))
    path = out / f"{stem}.json"
    record = json.loads(path.read_text("utf-8"))
    if guided is not None:
        record["explanations"][0]["guided"] = guided
    path.write_text(json.dumps(record), "utf-8")


def test_the_report_reads_the_gradient_badge_from_the_record_not_the_method_name(tmp_path):
    out = tmp_path / "out"
    _record(out, "named", "guidedbackprop", False)  # a guided method's name, but the record says a blend
    _record(out, "flagged", "mymethod", True)  # a name the report never heard of, a gradient picture
    _record(out, "old", "guidedgradcam", None)  # a record without the field: no badge
    text = write_page(out).read_text("utf-8")
    figures = {chunk.split('"', 1)[0]: chunk.split("</figure>", 1)[0]
               for chunk in text.split('<figure class="thumb" data-method="')[1:]}
    badged = {method for method, figure in figures.items() if ">gradients</span>" in figure}
    assert set(figures) == {"guidedbackprop", "mymethod", "guidedgradcam"} and badged == {"mymethod"}
