"""Discovery: PATH arguments -> ordered, de-duplicated tasks with safe, unique output stems."""

import json
import os
import sys

import numpy as np
import pytest

from camcli.runs.discovery import ImageTask, SkippedInput, discover, printable

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 24  # enough for the signature; decoding is not tested here


def touch(path, data=PNG):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def stems(tasks):
    return [task.out_stem for task in tasks]


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_directory_walk_is_recursive_sorted_and_filtered(in_tmp):
    for name in ["b.jpg", "a/z.png", "a/b/cat.JPG", "notes.txt", "README", "C.png"]:
        touch(in_tmp / "photos" / name, PNG if name[-3:].lower() in ("jpg", "png") else b"hello")
    touch(in_tmp / "photos" / "no_extension", PNG)  # included by its signature
    tasks, skipped = discover(["photos"], "out")
    assert skipped == []
    # Sorted by bytes: uppercase before lowercase, a directory where its name sorts.
    assert [t.display for t in tasks] == [
        "photos/C.png", "photos/a/b/cat.JPG", "photos/a/z.png", "photos/b.jpg", "photos/no_extension",
    ]
    assert stems(tasks) == ["C", "a/b/cat", "a/z", "b", "no_extension"]
    assert tasks[1].source == in_tmp.joinpath("photos", "a", "b", "cat.JPG").relative_to(in_tmp)


def test_text_named_jpg_is_included_and_other_text_is_not(in_tmp):
    touch(in_tmp / "d" / "fake.jpg", b"just text")
    touch(in_tmp / "d" / "notes.txt", b"just text")
    tasks, _ = discover(["d"], "out")
    assert [t.display for t in tasks] == ["d/fake.jpg"]


def test_a_file_argument_is_included_as_is(in_tmp):
    touch(in_tmp / "deep" / "dir" / "notes.txt", b"text")
    tasks, skipped = discover(["deep/dir/notes.txt"], "out")
    assert tasks == [ImageTask(in_tmp.joinpath("deep/dir/notes.txt").relative_to(in_tmp),
                               "deep/dir/notes.txt", "notes")]
    assert skipped == []


def test_absolute_arguments_display_absolute(in_tmp):
    path = touch(in_tmp / "cat.png")
    tasks, _ = discover([str(path)], in_tmp / "out")
    assert tasks[0].display == str(path)
    assert tasks[0].out_stem == "cat"


def test_missing_paths_and_broken_symlinks_are_skipped(in_tmp):
    (in_tmp / "dangling.jpg").symlink_to(in_tmp / "nowhere.jpg")
    touch(in_tmp / "d" / "ok.png")
    (in_tmp / "d" / "gone.png").symlink_to(in_tmp / "nowhere.png")
    (in_tmp / "d" / "gone.txt").symlink_to(in_tmp / "nowhere.txt")  # not an image name: silent
    tasks, skipped = discover(["missing.png", "dangling.jpg", "d"], "out")
    assert stems(tasks) == ["ok"]
    assert skipped == [
        SkippedInput("missing.png", "no such file or directory"),
        SkippedInput("dangling.jpg", "broken symlink"),
        SkippedInput("d/gone.png", "broken symlink"),
    ]


def test_symlink_loop_terminates(in_tmp):
    touch(in_tmp / "tree" / "sub" / "cat.png")
    (in_tmp / "tree" / "sub" / "loop").symlink_to(in_tmp / "tree")
    (in_tmp / "tree" / "self").symlink_to("self")  # a symlink to itself: ELOOP
    tasks, _ = discover(["tree"], "out")
    assert stems(tasks) == ["sub/cat"]


def test_directory_symlinks_are_followed(in_tmp):
    touch(in_tmp / "elsewhere" / "dog.png")
    touch(in_tmp / "tree" / "cat.png")
    (in_tmp / "tree" / "linked").symlink_to(in_tmp / "elsewhere", target_is_directory=True)
    tasks, _ = discover(["tree"], "out")
    assert [t.display for t in tasks] == ["tree/cat.png", "tree/linked/dog.png"]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_unreadable_directory_is_reported(in_tmp):
    locked = in_tmp / "tree" / "locked"
    touch(locked / "cat.png")
    touch(in_tmp / "tree" / "dog.png")
    locked.chmod(0)
    try:
        if os.access(locked, os.R_OK):
            pytest.skip("running as root: chmod 000 does not stop reading")
        tasks, skipped = discover(["tree"], "out")
        assert stems(tasks) == ["dog"]
        assert skipped == [SkippedInput("tree/locked", "permission denied")]
    finally:
        locked.chmod(0o755)


def test_output_dir_inside_input_is_never_read(in_tmp):
    touch(in_tmp / "photos" / "cat.png")
    touch(in_tmp / "photos" / "out" / "cat.gradcam.281.png")  # last run's result
    (in_tmp / "photos" / "via_link").symlink_to(in_tmp / "photos" / "out")
    tasks, skipped = discover(["photos"], "photos/out")
    assert [t.display for t in tasks] == ["photos/cat.png"]
    assert skipped == []


def test_output_dir_may_not_exist_yet(in_tmp):
    touch(in_tmp / "photos" / "cat.png")
    tasks, _ = discover(["photos"], "photos/new/out")
    assert stems(tasks) == ["cat"]


def test_input_equal_to_output_dir_is_walked_but_camcli_outputs_are_not(in_tmp):
    from camcli.runs.files import save_png

    touch(in_tmp / "photos" / "cat.png")
    save_png(in_tmp / "photos" / "cat.gradcam.3.png", np.zeros((4, 4, 3), np.uint8))  # last run's overlay
    tasks, skipped = discover(["photos"], "photos")
    assert [t.display for t in tasks] == ["photos/cat.png"]
    assert skipped == []
    tasks, skipped = discover(["photos/cat.gradcam.3.png"], "photos")
    assert tasks == [] and skipped == [SkippedInput("photos/cat.gradcam.3.png", "an output of camcli, not an input")]


def test_same_file_twice_is_included_once(in_tmp):
    touch(in_tmp / "photos" / "cat.png")
    (in_tmp / "alias.png").symlink_to(in_tmp / "photos" / "cat.png")
    tasks, _ = discover(["photos/cat.png", "photos", "./photos/cat.png", "alias.png"], "out")
    assert [t.display for t in tasks] == ["photos/cat.png"]
    assert stems(tasks) == ["cat"]


def test_same_stem_in_one_directory_keeps_extensions(in_tmp):
    for name in ["cat.jpg", "cat.png", "dog.png"]:
        touch(in_tmp / "d" / "a" / name)
    tasks, _ = discover(["d"], "out")
    assert stems(tasks) == ["a/cat.jpg", "a/cat.png", "a/dog"]


def test_stems_collide_ignoring_case(in_tmp):
    touch(in_tmp / "d" / "Cat.png")
    touch(in_tmp / "d" / "cat.jpg")
    tasks, _ = discover(["d"], "out")
    assert stems(tasks) == ["Cat.png", "cat.jpg"]


def test_same_relative_path_under_two_roots_gets_root_prefix(in_tmp):
    touch(in_tmp / "photos" / "cat.jpg")
    touch(in_tmp / "scans" / "cat.jpg")
    touch(in_tmp / "scans" / "dog.jpg")
    tasks, _ = discover(["photos", "scans"], "out")
    assert stems(tasks) == ["photos/cat.jpg", "scans/cat.jpg", "dog"]


def test_two_roots_with_one_basename_get_argument_index(in_tmp):
    touch(in_tmp / "x" / "photos" / "cat.jpg")
    touch(in_tmp / "y" / "photos" / "cat.jpg")
    tasks, _ = discover(["x/photos", "y/photos"], "out")
    assert stems(tasks) == ["1-photos/cat.jpg", "2-photos/cat.jpg"]


def test_file_arguments_with_one_name_get_parent_prefix(in_tmp):
    touch(in_tmp / "x" / "cat.jpg")
    touch(in_tmp / "y" / "cat.jpg")
    tasks, _ = discover(["x/cat.jpg", "y/cat.jpg"], "out")
    assert stems(tasks) == ["x/cat.jpg", "y/cat.jpg"]


def test_stems_are_always_unique():
    from camcli.runs.discovery import _Found, _unique_stems

    # Every round fails to separate these: same parts, same root name, same argument.
    found = [_Found(None, f"/r{i}", ("cat.jpg",), "photos", 1) for i in range(3)]
    assert _unique_stems(found) == ["1-photos/cat.jpg", "1-photos/cat.jpg~2", "1-photos/cat.jpg~3"]


def test_names_with_spaces_and_unicode(in_tmp):
    touch(in_tmp / "mes photos" / "été à Paris" / "chat noir 🐈.jpg")
    tasks, _ = discover(["mes photos"], "out")
    assert tasks[0].display == "mes photos/été à Paris/chat noir 🐈.jpg"
    assert tasks[0].out_stem == "été à Paris/chat noir 🐈"
    assert tasks[0].source.exists()


def test_non_utf8_file_name(in_tmp):
    directory = os.fsencode(in_tmp / "raw")
    os.mkdir(directory)
    try:
        with open(os.path.join(directory, b"caf\xe9.jpg"), "wb") as fp:
            fp.write(PNG)
    except (OSError, UnicodeError):
        pytest.skip("file system refuses non-UTF-8 names")
    tasks, _ = discover([b"raw"], "out")
    (task,) = tasks
    assert task.source.read_bytes() == PNG  # the exact name still opens
    assert task.display == "raw/caf\\xe9.jpg"
    json.dumps(task.display, ensure_ascii=False).encode("utf-8")  # valid for JSON as UTF-8
    assert os.fsencode(task.out_stem) == b"caf\xe9"


def test_control_characters_are_escaped_for_display(in_tmp):
    touch(in_tmp / "d" / "two\nlines.png")
    tasks, _ = discover(["d"], "out")
    assert tasks[0].display == "d/two\\x0alines.png"
    assert tasks[0].out_stem == "two\nlines"


@pytest.mark.parametrize("name", ["..png", "...png", "a\\b.png", ".png", "x..png"])
def test_out_stems_never_escape(in_tmp, name):
    touch(in_tmp / "d" / "sub" / name)
    touch(in_tmp / name)
    tasks, _ = discover(["d", name], "out")
    assert len(tasks) == 2
    for stem in stems(tasks):
        assert not os.path.isabs(stem)
        parts = stem.split("/")
        assert all(part not in ("", ".", "..") for part in parts), stem
        assert "\\" not in stem and "\x00" not in stem
        target = os.path.realpath(os.path.join(in_tmp, "out", stem))
        assert target.startswith(os.path.realpath(in_tmp / "out") + os.sep)


def test_printable_handles_str_bytes_and_paths():
    assert printable("plain/name.jpg") == "plain/name.jpg"
    assert printable(b"caf\xc3\xa9") == "café"
    assert printable(b"caf\xe9") == "caf\\xe9"
    assert printable("tab\there") == "tab\\x09here"
    assert printable("lone\udc80") == "lone\\x80"  # surrogateescape'd byte


def test_stem_components_are_sanitised():
    from camcli.runs.discovery import _Found, _unique_stems

    # Names no real directory walk produces, built directly: the sanitiser is the last line.
    found = [_Found(None, "/r", ("..", ".", "", "a/b\\c\x00d", "x.png"), "r", 1)]
    assert _unique_stems(found) == ["__/_/_/a_b_c_d/x"]


def test_directory_that_cannot_be_listed_is_reported(in_tmp, monkeypatch):
    # test_unreadable_directory_is_reported without needing a non-root user.
    touch(in_tmp / "tree" / "locked" / "cat.png")
    touch(in_tmp / "tree" / "dog.png")
    real_scandir = os.scandir

    def scandir(path):
        if os.path.basename(path) == "locked":
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    tasks, skipped = discover(["tree"], "out")
    assert stems(tasks) == ["dog"]
    assert skipped == [SkippedInput("tree/locked", "permission denied")]
