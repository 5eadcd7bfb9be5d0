"""Write a generated ImageNet-like JPEG folder (train/ and val/) for timing the input pipeline:

    python experiments/make_photo_folder.py /tmp/photos --classes 10 --train 100 --val 10
    python -m resnet_repro bench +exp=imagenet_resnet50 data.root=/tmp/photos data.val_size=0 ...

See resnet_repro/data/generated_folders.py ("photo") for what the images look like and why.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from resnet_repro.data.generated_folders import write_image_folder  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", help="folder to write (train/ and val/ inside)")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--train", type=int, default=100, help="training images per class")
    p.add_argument("--val", type=int, default=10, help="val images per class")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quality", type=int, default=90, help="JPEG quality")
    a = p.parse_args()
    if a.classes < 1 or a.train < 1 or a.val < 1 or not 1 <= a.quality <= 100:
        print("error: need --classes >= 1, --train >= 1, --val >= 1 and --quality in 1..100", file=sys.stderr)
        raise SystemExit(2)
    write_image_folder(a.root, a.classes, {"train": a.train, "val": a.val}, seed=a.seed, image="photo",
                       quality=a.quality)
    print(f"wrote {a.classes * (a.train + a.val)} images under {a.root}")


if __name__ == "__main__":
    main()
