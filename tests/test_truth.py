"""Ground-truth files: every format parses, every malformed file gives one clear line (and exit 2)."""

import json

import pytest
from click.testing import CliRunner

from camcli.cli import cli
from camcli.errors import UsageError
from camcli.evaluate.truth import TruthBox, load_truth, match_images

VOC = """<annotation>
  <folder>VOC2007</folder>
  <filename>{filename}</filename>
  <size><width>100</width><height>80</height><depth>3</depth></size>
  {objects}
</annotation>
"""
VOC_OBJECT = ("<object><name>{name}</name><difficult>0</difficult>"
              "<bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>")


def voc(filename, *objects):
    return VOC.format(filename=filename, objects="".join(
        VOC_OBJECT.format(name=name, xmin=b[0], ymin=b[1], xmax=b[2], ymax=b[3]) for name, b in objects))


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, "utf-8")
    return path


# --- formats --------------------------------------------------------------------------------------


def test_csv_with_header_several_rows_per_image_and_optional_label(tmp_path):
    path = write(tmp_path / "truth.csv", "image,x0,y0,x1,y1,label\n"
                                         "cat.jpg,1,2,30,40,tabby\n"
                                         "\n"
                                         "# a comment\n"
                                         "cat.jpg,50,60,70.5,80,\n"
                                         "./sub/dog.png,0,0,10,10,3\n")
    assert load_truth(path) == {
        "cat.jpg": [TruthBox(1, 2, 30, 40, "tabby"), TruthBox(50, 60, 70.5, 80, None)],
        "sub/dog.png": [TruthBox(0, 0, 10, 10, "3")],
    }


def test_csv_without_header_and_without_labels(tmp_path):
    path = write(tmp_path / "boxes.txt", "a.png,0,0,5,5\nb.png,1,1,2,2\n")
    assert load_truth(path) == {"a.png": [TruthBox(0, 0, 5, 5)], "b.png": [TruthBox(1, 1, 2, 2)]}


def test_csv_header_columns_by_name_in_any_order(tmp_path):
    path = write(tmp_path / "od.csv", "filename,width,height,class,xmin,ymin,xmax,ymax\n"
                                      "cat.jpg,100,80,cat,10,20,30,40\n")
    assert load_truth(path) == {"cat.jpg": [TruthBox(10, 20, 30, 40, "cat")]}


def test_csv_byte_order_mark_is_ignored(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufeffimage,x0,y0,x1,y1\ncat.jpg,0,0,1,1\n".encode())
    assert list(load_truth(path)) == ["cat.jpg"]


def test_voc_folder_converts_one_based_inclusive_boxes(tmp_path):
    write(tmp_path / "ann" / "000001.xml", voc("000001.jpg", ("dog", (1, 1, 10, 20)), ("person", (5, 6, 7, 8))))
    write(tmp_path / "ann" / "000002.xml", voc("000002.jpg", ("cat", (50, 40, 100, 80))))
    write(tmp_path / "ann" / "notes.txt", "not an annotation")
    assert load_truth(tmp_path / "ann") == {
        # xmin 1 is the first pixel (0-based 0); xmax 10 is the last pixel inside (exclusive end 10).
        "000001.jpg": [TruthBox(0, 0, 10, 20, "dog"), TruthBox(4, 5, 7, 8, "person")],
        "000002.jpg": [TruthBox(49, 39, 100, 80, "cat")],
    }


def test_single_voc_file(tmp_path):
    path = write(tmp_path / "one.xml", voc("x.png", ("cat", (2, 2, 4, 4))))
    assert load_truth(path) == {"x.png": [TruthBox(1, 1, 4, 4, "cat")]}


def test_json_mapping_and_record_list(tmp_path):
    mapping = write(tmp_path / "a.json", json.dumps({
        "cat.jpg": [{"box": [1, 2, 3, 4], "label": "cat"}, {"box": [0, 0, 1.5, 1]}],
        "dog.jpg": [{"box": [0, 0, 9, 9], "label": 7}],
    }))
    assert load_truth(mapping) == {
        "cat.jpg": [TruthBox(1, 2, 3, 4, "cat"), TruthBox(0, 0, 1.5, 1, None)],
        "dog.jpg": [TruthBox(0, 0, 9, 9, "7")],
    }
    records = write(tmp_path / "b.json", json.dumps([
        {"image": "cat.jpg", "box": [1, 2, 3, 4], "label": "cat"},
        {"image": "cat.jpg", "box": [5, 5, 6, 6], "label": None},
    ]))
    assert load_truth(records) == {"cat.jpg": [TruthBox(1, 2, 3, 4, "cat"), TruthBox(5, 5, 6, 6, None)]}


def test_format_is_sniffed_without_a_known_extension(tmp_path):
    path = write(tmp_path / "truth.dat", json.dumps({"a.png": [{"box": [0, 0, 2, 2]}]}))
    assert load_truth(path) == {"a.png": [TruthBox(0, 0, 2, 2)]}


# --- malformed files ------------------------------------------------------------------------------

CSV_FIX = "write image,x0,y0,x1,y1[,label]"

MALFORMED = [
    pytest.param("t.csv", "a.png,1,2,3\n", "t.csv: line 1: 4 columns, expected 5 or 6; " + CSV_FIX,
                 id="csv-missing-column"),
    pytest.param("t.csv", "image,x0,y0,x1,y1\na.png,1,2,3\n",
                 "t.csv: line 2: 4 columns, expected 5 as in the header; " + CSV_FIX, id="csv-header-missing-column"),
    pytest.param("t.csv", "a.png,1,2,3,4,cat,extra\n", "t.csv: line 1: 7 columns, expected 5 or 6; " + CSV_FIX,
                 id="csv-extra-column"),
    pytest.param("t.csv", "a.png,1,2,x,4\n", "t.csv: line 1: x1 'x' is not a number; " + CSV_FIX,
                 id="csv-not-a-number"),
    pytest.param("t.csv", "image,x0,y0,x1,y1\na.png,5,0,5,4\n",
                 "t.csv: line 2: x1 (5) must be greater than x0 (5); " + CSV_FIX, id="csv-x1-not-after-x0"),
    pytest.param("t.csv", "a.png,0,9,5,4\n", "t.csv: line 1: y1 (4) must be greater than y0 (9); " + CSV_FIX,
                 id="csv-y1-before-y0"),
    pytest.param("t.csv", "a.png,0,0,nan,4\n", "t.csv: line 1: x1 nan is not a finite number; " + CSV_FIX,
                 id="csv-nan"),
    pytest.param("t.csv", ",0,0,5,4\n", "t.csv: line 1: the image name is empty; " + CSV_FIX, id="csv-no-name"),
    pytest.param("t.csv", "image,left,top,width,height\na.png,0,0,5,5\n",
                 "t.csv: line 1: the header has no x1, y1 column (it has: image, left, top, width, height); "
                 + CSV_FIX, id="csv-unknown-header"),
    pytest.param("t.csv", "image,x0,y0,x1,y1,label\n", "t.csv holds no boxes; " + CSV_FIX, id="csv-header-only"),
    pytest.param("t.csv", "", "t.csv holds no boxes; " + CSV_FIX, id="csv-empty"),
    pytest.param("t.json", '{"a.png": [{"box": [0, 0, 1]}]}',
                 "t.json: record 'a.png'[0]: \"box\" must be a list of 4 numbers [x0, y0, x1, y1]",
                 id="json-3-numbers"),
    pytest.param("t.json", '{"a.png": {"box": [0, 0, 1, 1]}}', "t.json: record 'a.png': expected a list of boxes",
                 id="json-not-a-list"),
    pytest.param("t.json", '[{"image": "a.png", "box": [0, 0, "1", true]}]', "t.json: record 1: y1 True is not",
                 id="json-boolean"),
    pytest.param("t.json", '[{"box": [0, 0, 1, 1]}]', 't.json: record 1: expected an object with an "image" name',
                 id="json-no-image"),
    pytest.param("t.json", '[{"image": "a.png", "box": [0, 0, 1, 1]}, {"image": "b.png"}]',
                 't.json: record 2: expected an object with a "box" list', id="json-no-box"),
    pytest.param("t.json", '{"a.png": [{"box": [0, 0, 1, 1], "label": [1]}]}',
                 "t.json: record 'a.png'[0]: label [1] must be a class name or index", id="json-label-list"),
    pytest.param("t.json", '{"a.png": [\n{"box": [0, 0, 1, 1]},,\n]}', "t.json: line 2: invalid JSON",
                 id="json-broken"),
    pytest.param("t.json", '"a.png"', "t.json: the top level is a str, not an object or a list", id="json-string"),
    pytest.param("t.json", "{}", "t.json holds no boxes", id="json-empty"),
    pytest.param("t.xml", "<annotation><filename>a.png</filename>\n<object>", "t.xml: line 2: broken XML",
                 id="voc-broken"),
    pytest.param("t.xml", voc("a.png", ("cat", (1, 1, "z", 4))), "t.xml: object 1: <xmax> 'z' is not a number",
                 id="voc-not-a-number"),
    pytest.param("t.xml", voc("a.png").replace("</annotation>", "<object><name>x</name></object></annotation>"),
                 "t.xml: object 1: no <bndbox>", id="voc-no-bndbox"),
    pytest.param("t.xml", voc("a.png", ("cat", (1, 1, 4, 4))).replace("<ymax>4</ymax>", ""),
                 "t.xml: object 1: <bndbox> has no <ymax>", id="voc-no-ymax"),
    pytest.param("t.xml", voc("", ("cat", (1, 1, 4, 4))), "t.xml: no <filename>", id="voc-no-filename"),
    pytest.param("t.xml", voc("a.png", ("cat", (9, 1, 4, 4))), "t.xml: object 1: x1 (4) must be greater than x0 (8)",
                 id="voc-reversed"),
    pytest.param("t.xml", "<html><body/></html>", "t.xml: the root element is <html>, not <annotation>",
                 id="voc-not-voc"),
]


@pytest.mark.parametrize(("name", "text", "message"), MALFORMED)
def test_malformed_truth_gives_one_line_naming_file_and_place(tmp_path, name, text, message):
    path = write(tmp_path / name, text)
    with pytest.raises(UsageError) as caught:
        load_truth(path)
    error = str(caught.value)
    assert "\n" not in error
    assert error.startswith(str(path.parent) + "/"), error
    assert message in error, error


def test_missing_truth_file_and_empty_voc_folder(tmp_path):
    with pytest.raises(UsageError, match=r"truth file .*nope.csv does not exist; give a .csv, a .json or a folder"):
        load_truth(tmp_path / "nope.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="truth folder .*empty has no .xml files"):
        load_truth(tmp_path / "empty")


def test_non_utf8_truth_file(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(b"a.png,0,0,1,1,caf\xe9\n")
    with pytest.raises(UsageError, match="is not UTF-8; save the truth file as UTF-8"):
        load_truth(path)


@pytest.mark.parametrize("case", ["csv-not-a-number", "json-broken", "voc-no-bndbox"])
def test_cli_exits_2_with_the_one_line_message(tmp_path, case):
    name, text, message = next(p.values for p in MALFORMED if p.id == case)
    path = write(tmp_path / name, text)
    image = tmp_path / "img.png"
    image.write_bytes(b"")
    result = CliRunner().invoke(cli, ["evaluate", str(image), "--truth", str(path), "--model", "demo",
                                      "--out", str(tmp_path / "out")], prog_name="camcli", catch_exceptions=False)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"camcli: error: {path}: ") and message in lines[0], result.stderr
    assert not (tmp_path / "out").exists()


# --- matching images ------------------------------------------------------------------------------


def test_match_by_relative_path_then_name_then_stem(tmp_path):
    truth = {
        "a/cat.jpg": [TruthBox(0, 0, 1, 1)],
        "b/cat.jpg": [TruthBox(0, 0, 2, 2)],
        "dog.jpg": [TruthBox(0, 0, 3, 3)],
        "bird": [TruthBox(0, 0, 4, 4)],
        str(tmp_path / "abs" / "fish.png"): [TruthBox(0, 0, 5, 5)],
    }
    paths = [tmp_path / "x" / "a" / "cat.jpg", tmp_path / "b" / "cat.jpg", tmp_path / "dog.jpg",
             tmp_path / "bird.png", tmp_path / "abs" / "fish.png", tmp_path / "cow.jpg"]
    assert match_images(truth, paths) == [
        ("a/cat.jpg", None), ("b/cat.jpg", None), ("dog.jpg", None), ("bird", None),
        (str(tmp_path / "abs" / "fish.png"), None), (None, "no ground truth"),
    ]


def test_a_bare_name_shared_by_two_images_matches_neither(tmp_path):
    truth = {"cat.jpg": [TruthBox(0, 0, 1, 1)]}
    matches = match_images(truth, [tmp_path / "a" / "cat.jpg", tmp_path / "b" / "cat.jpg"])
    assert all(key is None and "ambiguous ground truth: 'cat.jpg' matches 2 images" in reason
               for key, reason in matches)


def test_ambiguous_stem_matches_nothing(tmp_path):
    truth = {"cat.jpg": [TruthBox(0, 0, 1, 1)], "cat.png": [TruthBox(0, 0, 1, 1)]}
    assert match_images(truth, [tmp_path / "cat.webp"]) == [(None, "no ground truth")]
