"""Segment one image from two clicks with a trained checkpoint and save the mask as a PNG.

    python examples/predict.py CKPT [IMAGE] [--depth DEPTH.npy] [--out mask.png]

IMAGE defaults to the first GrabCut image in ../shared/datasets/GrabCut (relative to the repository); --depth
is needed only by a model that reads depth from data (data.depth.source file or gt)."""
import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from ois_lightning import Predictor

GRABCUT = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "GrabCut" / "data_GT"

parser = argparse.ArgumentParser(description="Segment an image from two clicks")
parser.add_argument("ckpt", help="Lightning .ckpt from `ois train`")
parser.add_argument("image", nargs="?", help="RGB image (default: a GrabCut image)")
parser.add_argument("--depth", help="(H,W) depth map as .npy, for models reading depth from data")
parser.add_argument("--out", default="mask.png", help="mask PNG to write (default mask.png)")
args = parser.parse_args()

path = Path(args.image) if args.image else sorted(GRABCUT.glob("*.jpg"))[0]
image = np.asarray(Image.open(path).convert("RGB"))  # H,W,3 uint8
h, w = image.shape[:2]
predictor = Predictor.from_checkpoint(args.ckpt)  # config and weights from the checkpoint alone
predictor.set_image(image, np.load(args.depth) if args.depth else None)  # the encoder runs once
points = np.array([[h // 2, w // 2], [h // 10, w // 10]])  # (y, x): a positive at the centre, a negative
labels = np.array([1, 0])  # near the top-left corner
mask, prob = predictor.predict(points[:1], labels[:1])  # click 1
mask, prob = predictor.predict(points, labels, prev_mask=mask)  # click 2, with the previous mask
Image.fromarray(mask.astype(np.uint8) * 255).save(args.out)
print(f"{path.name}: {mask.mean():.1%} of the image in the mask -> {args.out}")
