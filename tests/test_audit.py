"""`camcli audit` (SpRAy): clustering synthetic maps with known groups, the eigengap's choice, the flag
rule's thresholds, all-zero maps, and the command end to end on the demo pair (demo-cheat's tag is
flagged with no boxes; the clean demo raises no flag), with its files, gate and usage errors."""

import csv
import io
import json
import subprocess
import sys

import numpy as np
import pytest
from cli_helpers import invoke, only_line
from conftest import REPO
from PIL import Image

import camcli
from camcli.audit.folder import AUDIT_CSV_COLUMNS
from camcli.audit.rule import DEFAULT_RULE, FlagRule
from camcli.audit.spray import (
    GRID,
    MIN_IMAGES,
    Cluster,
    affinity_graph,
    apply_rule,
    choose_cluster_count,
    cluster_class,
    laplacian_eigenvalues,
    shrink,
    unit_rows,
)
from camcli.runs.layout import is_camcli_output

pytest.importorskip("sklearn", reason="the audit extra (scikit-learn) is not installed: pip install '.[audit]'")

# The benchmark's proportions (benchmarks/audit.py): every tagged scene goes to the tag's class under
# demo-cheat, so half of that class carries the tag, split over four corners. Much smaller folders
# leave too few maps per corner for the neighbour graph (see the audit's notes in the README).
CLEAN_PER_CLASS, TAGGED_PER_CLASS = 50, 8
SMALL_CLEAN, SMALL_TAGGED = 12, 2


def blob(cy, cx, sigma, grid=GRID):
    y, x = np.mgrid[0:grid, 0:grid]
    return np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * sigma ** 2))


def two_blobs_and_a_corner(seed=0, first=30, second=30, corner=8):
    """Two strategies that look at the middle of the picture, each map moved about a little, and a few
    near-identical maps on the top-left corner; the group of each map."""
    rng = np.random.default_rng(seed)
    maps = [blob(12 + rng.normal(0, 1), 10 + rng.normal(0, 1), 3.5) for _ in range(first)]
    maps += [blob(20 + rng.normal(0, 1), 22 + rng.normal(0, 1), 3.5) for _ in range(second)]
    maps += [blob(1 + rng.uniform(0, 0.3), 1 + rng.uniform(0, 0.3), 2.0) for _ in range(corner)]
    maps = np.stack(maps)
    return maps / maps.max(axis=(1, 2), keepdims=True), np.repeat([0, 1, 2], [first, second, corner])


def eigenvalues_of(maps):
    return laplacian_eigenvalues(affinity_graph(unit_rows(maps.reshape(len(maps), -1))))


# --- clustering synthetic maps ------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_clusters_never_mix_the_groups_and_the_corner_is_flagged(seed):
    maps, group = two_blobs_and_a_corner(seed)
    result = cluster_class(maps, seed=0, embed=False)
    assert len(result.clusters) >= 3
    for cluster in result.clusters:
        assert len(set(group[cluster.members])) == 1, f"cluster {cluster.id} mixes groups"
    flagged = [c for c in result.clusters if c.flagged]
    assert len(flagged) == 1
    corner = flagged[0]
    assert sorted(corner.members) == list(np.flatnonzero(group == 2))
    assert corner.share == pytest.approx(8 / 68, abs=1e-4)
    assert corner.border_share > 0.9 and corner.corner_share > 0.9
    assert corner.tightness > 0.99
    assert corner.rest_border_share < 0.1
    assert "border" in corner.reason and "shortcut" in corner.reason
    main = [c for c in result.clusters if c.main]
    assert len(main) == 1 and group[main[0].members[0]] in (0, 1)
    assert sum(len(c.members) for c in result.clusters) == len(maps)


def test_the_mean_map_focus_and_mass_of_a_cluster():
    maps, group = two_blobs_and_a_corner(0)
    result = cluster_class(maps, seed=0, embed=False)
    corner = next(c for c in result.clusters if c.flagged)
    mass = maps[group == 2] / maps[group == 2].sum(axis=(1, 2), keepdims=True)  # each map's share of its mass
    expected = mass.mean(axis=0)
    np.testing.assert_allclose(corner.mean_map, expected / expected.max(), atol=1e-6)
    assert np.unravel_index(np.argmax(corner.mean_map), corner.mean_map.shape) == (1, 1)
    wide = next(c for c in result.clusters if group[c.members[0]] == 0)
    assert 0 < wide.focus < corner.focus < 1


@pytest.mark.parametrize("seed", range(6))
def test_the_eigengap_counts_three_well_connected_groups(seed):
    # each group no larger than the neighbour count: densely linked inside, no link between groups
    maps, _ = two_blobs_and_a_corner(seed, first=11, second=11, corner=6)
    values = eigenvalues_of(maps)
    assert max(values[:3]) < 0.01  # three (nearly) separate pieces: the corner's maps link weakly to a blob
    assert values[3] > 0.5
    assert choose_cluster_count(values) == 3
    result = cluster_class(maps, seed=0, embed=False)
    assert len(result.clusters) == 3
    assert result.eigenvalues == pytest.approx(list(values), abs=1e-6)


@pytest.mark.parametrize("values, count", [
    ([0, 0, 0.9, 0.95, 1.0], 2),
    ([0, 0.01, 0.02, 0.03, 0.6, 0.7], 4),
    ([0] * 10 + [0.5, 1.9], 10),  # the larger gap past 10 is out of range
    ([0.3, 0, 0.5, 0.01], 2),  # unsorted input
])
def test_the_eigengap_choice_on_hand_made_eigenvalues(values, count):
    assert choose_cluster_count(values) == count


def test_the_eigengap_stays_in_range_for_few_eigenvalues():
    assert choose_cluster_count([0.0, 0.4]) == 2
    assert choose_cluster_count([0.0, 0.1, 0.9]) == 2


def test_a_map_is_shrunk_by_box_averaging():
    heatmap = np.zeros((64, 64), dtype=np.float32)
    heatmap[:2, :2] = 1.0
    cells = shrink(heatmap, 32)
    assert cells.shape == (32, 32)
    assert cells[0, 0] == pytest.approx(1.0) and cells.sum() == pytest.approx(1.0)


# --- the flag rule ------------------------------------------------------------------------------------


def figures(share=0.1, tightness=0.95, border=0.8, rest=0.2):
    return Cluster(id=1, members=np.arange(3), share=share, mean_map=np.zeros((GRID, GRID)), focus=0.5,
                   border_share=border, corner_share=0.5, tightness=tightness, rest_border_share=rest)


@pytest.mark.parametrize("changes, flagged, words", [
    ({}, True, "shortcut"),
    ({"share": 0.3}, True, "shortcut"),  # at the bound: still small
    ({"share": 0.301}, False, "not small: 30.1% of the class (above 30%)"),
    ({"tightness": 0.85}, True, "shortcut"),
    ({"tightness": 0.849}, False, "not tight: its maps differ (tightness 0.849, below 0.85)"),
    ({"border": 0.45, "rest": 0.2}, True, "shortcut"),  # exactly min_away above the rest
    ({"border": 0.449, "rest": 0.2}, False, "looks where the rest of the class looks (border share 0.449 "
                                            "against 0.200, less than 0.25 above it)"),
    ({"rest": None}, False, "the only cluster of the class"),
])
def test_the_flag_rule_thresholds(changes, flagged, words):
    cluster = figures(**changes)
    apply_rule([cluster], DEFAULT_RULE)
    assert cluster.flagged is flagged
    assert words in cluster.reason


def test_a_custom_rule_moves_the_thresholds():
    cluster = figures(share=0.4, tightness=0.7, border=0.5, rest=0.2)
    apply_rule([cluster], DEFAULT_RULE)
    assert not cluster.flagged
    apply_rule([cluster], FlagRule(max_share=0.5, min_tightness=0.6, min_away=0.2))
    assert cluster.flagged


def test_a_class_of_one_strategy_is_never_flagged():
    rng = np.random.default_rng(4)
    maps = np.stack([blob(1 + rng.uniform(0, 0.2), 1 + rng.uniform(0, 0.2), 2.0) for _ in range(MIN_IMAGES - 1)])
    result = cluster_class(maps / maps.max(axis=(1, 2), keepdims=True), embed=False)
    assert len(result.clusters) == 1 and not result.clusters[0].flagged
    assert "too few" in result.note and str(MIN_IMAGES) in result.note
    assert result.eigenvalues == []


@pytest.mark.slow
def test_all_zero_maps_form_their_own_cluster_and_are_never_flagged():
    maps, group = two_blobs_and_a_corner(1)
    maps = np.concatenate([maps, np.zeros((5, GRID, GRID))])
    result = cluster_class(maps, seed=0)
    empty = next(c for c in result.clusters if set(c.members) == set(range(68, 73)))
    assert not empty.flagged and "all-zero" in empty.reason
    assert empty.focus == 0 and empty.border_share == 0 and not np.isnan(empty.tightness)
    assert "5 all-zero maps" in result.note
    assert result.embedding.shape == (73, 2) and np.isfinite(result.embedding).all()
    assert result.embedding.min() >= 0 and result.embedding.max() <= 1
    for cluster in result.clusters:
        if cluster is not empty:
            assert not set(cluster.members) & set(range(68, 73))
    assert sum(c.flagged for c in result.clusters) == 1  # the corner still is


def test_purity_against_truth_labels():
    maps, group = two_blobs_and_a_corner(2)
    truth = ["cat" if g == 0 else "dog" for g in group]
    truth[-1] = None  # unknown labels do not count
    truth[-2] = "cat"
    result = cluster_class(maps, truth, seed=0, embed=False)
    corner = next(c for c in result.clusters if c.flagged)
    assert corner.purity == pytest.approx(6 / 7, abs=1e-4) and corner.purity_label == "dog"
    for cluster in result.clusters:
        if group[cluster.members[0]] == 0:
            assert cluster.purity == 1.0 and cluster.purity_label == "cat"


# --- end to end on the demo pair ----------------------------------------------------------------------


def write_scenes(folder, clean, tagged, seed):
    """Clean and tagged scenes of every class; {image path: carries the tag}, and a labels CSV."""
    from camcli.models.demo import CLASSES
    from camcli.models.demo.scenes import make_scene

    rng = np.random.default_rng(seed)
    carries, labels = {}, []
    for index, label in enumerate(CLASSES):
        for kind, count in (("clean", clean), ("tagged", tagged)):
            for i in range(count):
                path = folder / f"{kind}_{label}_{i:02d}.png"
                Image.fromarray(make_scene(rng, size=96, class_index=index, tag=kind == "tagged").image).save(path)
                carries[str(path)] = kind == "tagged"
                labels.append((path.name, label))
    table = folder.parent / f"{folder.name}.labels.csv"
    table.write_text("image,label\n" + "".join(f"{name},{label}\n" for name, label in labels))
    return folder, carries, table


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    return write_scenes(tmp_path_factory.mktemp("mixed"), CLEAN_PER_CLASS, TAGGED_PER_CLASS, 2024)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return write_scenes(tmp_path_factory.mktemp("small"), SMALL_CLEAN, SMALL_TAGGED, 7)


@pytest.fixture(scope="module")
def cheat_audit(mixed, tmp_path_factory):
    folder, _, _ = mixed
    out = tmp_path_factory.mktemp("cheat") / "out"
    result = invoke("audit", folder, "--model", "demo-cheat", "--out", out, "--fail-on-flag", "--report", "-q")
    return result, out


@pytest.mark.slow
def test_demo_cheat_is_flagged_without_boxes(mixed, cheat_audit):
    from camcli.models.demo import TAG_CLASS

    _, carries, _ = mixed
    result, out = cheat_audit
    assert result.exit_code == 1, result.output
    flagged_rows = [line for line in result.stdout.splitlines() if line.endswith("FLAGGED")]
    assert flagged_rows and all(line.startswith(TAG_CLASS) for line in flagged_rows)
    audit = json.loads((out / "audit.json").read_text())
    assert audit["kind"] == "audit" and audit["model"] == "demo-cheat" and audit["method"] == "gradcam"
    assert audit["images"] == len(carries) and audit["flagged"] >= 1
    tag_class = next(c for c in audit["classes"] if c["label"] == TAG_CLASS)
    flagged = {m for pile in tag_class["pile_ups"] if pile["flagged"] for m in pile["members"]}
    tagged = {m for m in tag_class["members"] if carries[m]}
    assert len(flagged & tagged) / len(flagged) >= 0.9  # precision
    assert len(flagged & tagged) / len(tagged) >= 0.9  # recall
    rule = audit["rule"]
    for cls in audit["classes"]:
        for pile in cls["pile_ups"]:
            if pile["flagged"]:  # the figures the reason quotes are the rule's
                assert cls["label"] == TAG_CLASS and pile["size"] >= 5 and pile["pattern"] >= rule["min_pattern"]
                assert f"similarity {pile['pattern']:.2f}" in pile["reason"] and (out / pile["crops"]).is_file()
                assert Image.open(out / pile["crops"]).size[1] == 96  # the crops, side by side
    json.dumps(audit, allow_nan=False)


@pytest.mark.slow
def test_the_audit_files(mixed, cheat_audit):
    _, carries, _ = mixed
    _, out = cheat_audit
    audit = json.loads((out / "audit.json").read_text())
    rows = list(csv.DictReader(io.StringIO((out / "audit.csv").read_text())))
    assert tuple(rows[0].keys()) == AUDIT_CSV_COLUMNS
    assert sorted(row["image"] for row in rows) == sorted(carries)
    by_image = {row["image"]: row for row in rows}
    for cls in audit["classes"]:
        assert len(cls["embedding"]) == cls["images"] == len(cls["members"])
        for cluster in cls["clusters"]:
            picture = out / cluster["mean_map"]
            assert picture.is_file() and is_camcli_output(picture)
            assert Image.open(picture).size == (128, 128)
            assert 1 <= len(cluster["samples"]) <= 6
            assert all((out / sample).is_file() for sample in cluster["samples"])
            for member in cluster["members"]:
                assert by_image[member]["cluster"] == str(cluster["id"])
                assert by_image[member]["flagged"] == str(int(cluster["flagged"]))
    page = (out / "index.html").read_text()
    assert 'class="pt' in page and "audit." in page
    crops = [pile["crops"] for cls in audit["classes"] for pile in cls["pile_ups"] if pile["flagged"]]
    assert crops and all(f'src="{crop}"' in page for crop in crops) and "possible shortcut" in page


@pytest.mark.slow
def test_demo_raises_no_flag(mixed, tmp_path):
    folder, _, _ = mixed
    result = invoke("audit", folder, "--model", "demo", "--out", tmp_path / "out", "--fail-on-flag", "-q")
    assert result.exit_code == 0, result.output
    audit = json.loads((tmp_path / "out" / "audit.json").read_text())
    assert audit["flagged"] == 0 and audit["model"] == "demo"
    assert not any(c["flagged"] for cls in audit["classes"] for c in cls["clusters"])


@pytest.mark.slow
def test_an_explain_folder_is_audited_in_place_with_the_same_flags(mixed, cheat_audit, tmp_path):
    folder, _, _ = mixed
    _, audited = cheat_audit
    out = tmp_path / "out"
    assert invoke("explain", folder, "--model", "demo-cheat", "--save-heatmap", "--out", out, "-q").exit_code == 0
    result = invoke("audit", out, "--json")
    assert result.exit_code == 0, result.output  # no --fail-on-flag: flags are reported, not failed
    first = json.loads((audited / "audit.json").read_text())
    second = json.loads((out / "audit.json").read_text())
    assert json.loads(result.stdout)["flagged"] == second["flagged"] == first["flagged"]
    assert "camcli: flagged: class 'circle', cluster" in result.stderr
    members = lambda audit: sorted(sorted(c["members"]) for cls in audit["classes"]  # noqa: E731
                                   for c in cls["clusters"] if c["flagged"])
    assert members(first) == members(second)
    # a rerun replaces camcli's own files
    assert invoke("audit", out, "-q").exit_code == 0


def test_audit_by_truth(small, tmp_path):
    folder, carries, table = small
    report = camcli.audit_paths([folder], out=tmp_path / "out", model="demo-cheat", by="truth", truth_labels=table)
    record = json.loads((tmp_path / "out" / "audit.json").read_text())
    assert record["by"] == "truth" and record["images"] == len(carries)
    assert len(report.classes) == 6
    for cls in record["classes"]:
        assert cls["images"] == SMALL_CLEAN + SMALL_TAGGED
        assert set(cls["truth"]) == {cls["label"]}
        for cluster in cls["clusters"]:
            assert cluster["purity"] == 1.0 and cluster["purity_label"] == cls["label"]


def test_usage_errors_exit_2_with_one_line(small, tmp_path):
    folder, _, _ = small
    plain = tmp_path / "plain"
    assert invoke("explain", folder, "--model", "demo", "--out", plain, "-q").exit_code == 0
    cases = [
        (("audit", plain), "--save-heatmap"),
        (("audit", folder, "--model", "demo", "--by", "truth", "--out", tmp_path / "a"), "labels"),
        (("audit", plain, "--sanity"), "sanity"),
        (("audit", folder, "--model", "demo", "--fail-under", "pointing=0.5", "--out", tmp_path / "b"), "sanity"),
    ]
    bad_table = tmp_path / "bad.csv"
    bad_table.write_text("image,class\nx.png,circle\n")
    cases.append((("audit", folder, "--model", "demo", "--by", "truth", "--truth-labels", bad_table,
                   "--out", tmp_path / "c"), "label"))
    for args, words in cases:
        result = invoke(*args)
        assert result.exit_code == 2, (args, result.output)
        assert words in only_line(result), (args, result.stderr)


def test_a_foreign_audit_json_is_never_replaced(small, tmp_path):
    folder, _, _ = small
    out = tmp_path / "out"
    out.mkdir()
    (out / "audit.json").write_text('{"mine": true}')
    result = invoke("audit", folder, "--model", "demo", "--out", out)
    assert result.exit_code == 2
    assert "not written by camcli" in only_line(result)
    assert (out / "audit.json").read_text() == '{"mine": true}'


@pytest.mark.slow
def test_the_cli_module_imports_no_audit_libraries():
    code = ("import sys, camcli.cli; bad = [m for m in ('sklearn', 'scipy', 'tensorflow', 'keras') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
