"""Score-CAM's memory against --batch-size: peak RSS at batch 64 within 1.5x that at batch 8.

Each run is a fresh `camcli explain` process (ResNet50, weights none, --method scorecam
--max-channels 16) over the same 64 generated 224 px photos, at --batch-size 8 and 64. Score-CAM's
masked copies go through the model 32 at a time whatever the batch size (camcli.api.MASKED_BATCH);
before issue 15 they went 4 x --batch-size at a time, and one image at --batch-size 100 held 7 GB.
`make bench-scorecam-memory` (about 3 minutes on 2 cores).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TARGET = 1.5
IMAGES = 64


def make_images(folder: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(IMAGES):
        smooth = rng.random((8, 8, 3)) * 255
        picture = Image.fromarray(smooth.astype(np.uint8)).resize((224, 224), Image.Resampling.BICUBIC)
        picture.save(folder / f"img{i:03d}.jpg", quality=90)


def peak_mb(folder: Path, out: Path, batch: int) -> float:
    """VmHWM of a fresh camcli process (not ru_maxrss, which Linux carries across exec)."""
    code = ("import sys, camcli; camcli.explain_paths([sys.argv[1]], model='resnet50', weights='none', "
            "out=sys.argv[2], methods=['scorecam'], max_channels=16, batch_size=int(sys.argv[3]));"
            "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])")
    done = subprocess.run([sys.executable, "-c", code, str(folder), str(out), str(batch)], capture_output=True,
                          text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    return int(done.stdout.strip().splitlines()[-1]) / 1024


def main() -> int:
    root = Path(tempfile.mkdtemp(prefix="camcli-scorecam-memory-"))
    make_images(root / "images")
    peaks = {batch: peak_mb(root / "images", root / f"out{batch}", batch) for batch in (8, 64)}
    shutil.rmtree(root, ignore_errors=True)
    ratio = peaks[64] / peaks[8]
    verdict = "held" if ratio <= TARGET else "MISSED"
    print(f"Score-CAM (resnet50, --max-channels 16, {IMAGES} images): peak RSS {peaks[8]:.0f} MB at --batch-size 8, "
          f"{peaks[64]:.0f} MB at --batch-size 64: {ratio:.2f}x (<= {TARGET}: {verdict})")
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
