"""The README's "Larger than one machine" recipes run as they stand: the job-array loop and the Ray Data
script, each in a shell, on the sample images; their outputs are camcli explain's."""

import json
import os
import re
import subprocess
import sys

import pytest
from conftest import REPO
from json_compare import json_differences

pytestmark = pytest.mark.slow  # shells that run camcli as a command

SECTION = "## Larger than one machine"


def recipes() -> list[str]:
    readme = (REPO / "README.md").read_text("utf-8")
    start = readme.index(SECTION)
    end = readme.index("\n## ", start + len(SECTION))
    return re.findall(r"```bash\n(.*?)```", readme[start:end], flags=re.DOTALL)


def run_recipe(script: str, cwd) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}",
                   "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(["bash", "-e", "-c", script], cwd=cwd, env=environment, capture_output=True, text=True,
                          timeout=600)


def records(out) -> dict:
    return {os.path.relpath(os.path.join(folder, name), out): json.loads(open(os.path.join(folder, name)).read())
            for folder, _, names in os.walk(out) for name in names
            if name.endswith(".json") and not name.startswith("summary")}


def test_the_section_has_the_two_recipes():
    shards, ray_script = recipes()
    assert "--shard $k/4" in shards and "camcli summary cams" in shards
    assert "camcli.ray.explain_dataset" in ray_script and "camcli report cams-ray" in ray_script


def test_the_job_array_recipe_runs(tmp_path):
    (tmp_path / "sample_images").symlink_to(REPO / "sample_images")
    shards, _ = recipes()
    result = run_recipe(shards, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    images = len([name for name in os.listdir(REPO / "sample_images" / "generated") if name.endswith(".png")])
    summary = json.loads((tmp_path / "cams" / "summary.json").read_text())
    assert (summary["images"], summary["ok"], summary["failed"], summary["missing_shards"]) == (images, images, 0, [])
    assert sorted(p.name for p in (tmp_path / "cams").glob("summary.*-of-4.json")) == \
        [f"summary.{k}-of-4.json" for k in range(1, 5)]
    assert len(records(tmp_path / "cams")) == images


def test_the_ray_recipe_runs_and_writes_what_the_shards_wrote(tmp_path):
    pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'keras-camcli[ray]'); "
                                           "`make test` installs it")
    (tmp_path / "sample_images").symlink_to(REPO / "sample_images")
    shards, ray_script = recipes()
    assert run_recipe(shards, tmp_path).returncode == 0
    result = run_recipe(ray_script, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    by_shards, by_ray = records(tmp_path / "cams"), records(tmp_path / "cams-ray")
    assert sorted(by_ray) == sorted(by_shards) and by_ray
    assert [d for name in by_ray for d in json_differences(by_shards[name], by_ray[name], name)] == []
    assert re.search(rf"^{len(by_ray)} explained, 0 failed, [\d.]+ images/s$", result.stdout, flags=re.MULTILINE)
    assert (tmp_path / "cams-ray" / "index.html").is_file()
