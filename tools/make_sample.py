"""Build ``qzoo/sample_data/cifar10-sample.tar.gz``: the small CIFAR-10 sample the demo ships with.

    python tools/make_sample.py cifar10-jpeg.tar.gz

A seeded, class-balanced pick of original JPEG files (no re-encoding) from the CIFAR-10 archive:
500 training images for calibration and 2,000 test images for evaluation, in the ImageFolder
layout, written with fixed metadata so the same archive comes out byte for byte every time.
"""

from __future__ import annotations

import argparse
import gzip
import io
import random
import tarfile
from pathlib import Path

from qzoo.data import unpack_archive

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "qzoo" / "sample_data" / "cifar10-sample.tar.gz"
COUNTS = {"train": 500, "test": 2000}


def pick(split_root: Path, count: int, seed: int) -> list[Path]:
    classes = sorted(p.name for p in split_root.iterdir() if p.is_dir())
    generator = random.Random(seed)
    picked = []
    for index, name in enumerate(classes):
        files = sorted((split_root / name).glob("*.jpg"))
        share = count // len(classes) + (1 if index < count % len(classes) else 0)
        picked += sorted(generator.sample(files, share))
    return picked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("archive", type=Path, help="CIFAR-10 as a .tar.gz of train/ and test/ ImageFolders of "
                        "JPEG files (the sample copies the files byte for byte)")
    source = unpack_archive(parser.parse_args().archive)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for split, count in COUNTS.items():
            for path in pick(source / split, count, seed=0):
                data = path.read_bytes()
                info = tarfile.TarInfo(f"cifar10-sample/{path.relative_to(source)}")
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                tar.addfile(info, io.BytesIO(data))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with open(OUT, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
        gz.write(buffer.getvalue())
    print(f"{OUT}: {OUT.stat().st_size / 1e6:.2f} MB, {sum(COUNTS.values())} images")


if __name__ == "__main__":
    main()
