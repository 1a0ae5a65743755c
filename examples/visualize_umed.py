# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""Show UMed's priors and perturbations (Eq. 4-6 of Lin et al., IJCAI 2024) for one image + mask.

A MONAI ``Compose`` pipeline loads the pair (``LoadImageUnitd``, ``LoadMaskd``), resizes it to ``--image_size``,
computes the contour band / ROI interior (``ContourBandd``, Eq. 4-5) and the LBP texture map
(``LBPTextureMapd``, Eq. 5), and applies a ``UMedPerturbator`` -- untrained (random weights, ``--seed``) or a
trained protector (``--protector protect_output/protector.pt``). The picture has six panels:

    image | contour band (grey: ROI interior) | texture map | delta_c (amplified) | delta_t (amplified) | protected

with ``delta`` shown as ``0.5 + delta / (2 epsilon)`` (mid-grey = unchanged, white = +epsilon, black = -epsilon).
The total width is ``6 * --panel_size`` pixels. Works on 1- and 3-channel images.

Example::

    python examples/visualize_umed.py --image img.png --mask mask.png --output umed.png
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
import torch
from monai.transforms import AsDiscreted, Compose, EnsureTyped, MapTransform, Resized
from PIL import Image, ImageDraw, ImageFont

from monai_umed.apps import infer_channels
from monai_umed.data import LoadImageUnitd, LoadMaskd
from monai_umed.networks import UMedPerturbator
from monai_umed.protectors import UMedProtector, load_protector
from monai_umed.transforms import ContourBandd, LBPTextureMapd, MatchChannelsd
from monai_umed.utils import atomic_write_bytes

TITLES = ("image", "contour band (grey: y_t)", "texture map x_t", "delta_c (amplified)", "delta_t (amplified)",
          "protected")


class UMedPerturbd(MapTransform):
    """Apply a :class:`UMedPerturbator` to a prepared sample: adds ``protected``, ``delta_c`` and ``delta_t``
    (Eq. 4-6) from ``image``, ``contour_band``, ``texture_map`` and ``roi_interior``."""

    def __init__(self, perturbator: UMedPerturbator, keys: str = "image") -> None:
        super().__init__(keys)
        self.perturbator = perturbator.eval()

    @torch.no_grad()
    def __call__(self, data):
        d = dict(data)
        dev = next(self.perturbator.parameters()).device
        inputs = [torch.as_tensor(d[k]).as_subclass(torch.Tensor)[None].to(dev)
                  for k in ("image", "contour_band", "texture_map", "roi_interior")]
        protected, delta_c, delta_t = self.perturbator(*inputs)
        d["protected"], d["delta_c"], d["delta_t"] = protected[0].cpu(), delta_c[0].cpu(), delta_t[0].cpu()
        return d


def make_pipeline(perturbator: UMedPerturbator, channels: int, image_size: int, priors: dict) -> Compose:
    """The MONAI pipeline: load, match channels, resize, priors (Eq. 4-5), perturb (Eq. 4-6)."""
    return Compose(
        [
            LoadImageUnitd("image"),
            LoadMaskd("label"),
            MatchChannelsd("image", channels),
            Resized("image", spatial_size=(image_size, image_size), mode="bilinear", anti_aliasing=True),
            Resized("label", spatial_size=(image_size, image_size), mode="nearest"),
            AsDiscreted("label", threshold=0.5),
            ContourBandd("label", width=priors["band_width"], side=priors["band_side"]),
            LBPTextureMapd("image", num_points=priors["lbp_points"], radius=priors["lbp_radius"],
                           method=priors["lbp_method"], normalize=priors["lbp_normalize"]),
            EnsureTyped(["image", "label", "contour_band", "roi_interior", "texture_map"], dtype=torch.float32),
            UMedPerturbd(perturbator),
        ]
    )


def _rgb8(chw: torch.Tensor) -> np.ndarray:
    a = np.clip(torch.as_tensor(chw).as_subclass(torch.Tensor).float().cpu().numpy(), 0.0, 1.0)
    a = a[:1].repeat(3, 0) if a.shape[0] != 3 else a
    return np.rint(np.moveaxis(a, 0, -1) * 255).astype(np.uint8)


def compose_picture(d: dict, epsilon: float, panel_size: int) -> Image.Image:
    """Six panels side by side (each ``panel_size`` wide, nearest-neighbour scaled), titled with PIL's default font."""
    amp = lambda t: 0.5 + t / (2 * epsilon)  # noqa: E731
    band_view = torch.clamp(d["contour_band"] + 0.45 * d["roi_interior"], 0, 1)
    tiles = [d["image"], band_view, d["texture_map"], amp(d["delta_c"]), amp(d["delta_t"]), d["protected"]]
    h, w = d["image"].shape[-2:]
    height = max(1, round(panel_size * h / w))
    title_h = 14
    canvas = Image.new("RGB", (6 * panel_size, height + title_h), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for i, (tile, title) in enumerate(zip(tiles, TITLES)):
        img = Image.fromarray(_rgb8(tile)).resize((panel_size, height), Image.NEAREST)
        canvas.paste(img, (i * panel_size, title_h))
        draw.text((i * panel_size + 2, 1), title, fill=(0, 0, 0), font=font)
        if i:
            draw.line([(i * panel_size, 0), (i * panel_size, height + title_h)], fill=(255, 255, 255), width=1)
    return canvas


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring / ``--help``."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--image", required=True, help="image file (PNG, JPEG, TIFF, BMP, NIfTI; 1 or 3 channels)")
    p.add_argument("--mask", required=True, help="its mask (foreground = label > 0)")
    p.add_argument("--output", default="umed_picture.png", help="PNG to write")
    p.add_argument("--protector", default=None, help="a trained protector.pt (default: untrained perturbators)")
    p.add_argument("--epsilon", type=float, default=None, help="l-inf budget on the [0, 1] scale (default 4/255 or "
                   "the protector's)")
    p.add_argument("--image_size", type=int, default=None, help="working size (default 96 or the protector's)")
    p.add_argument("--band_width", type=int, default=3, help="contour band half-width (untrained only)")
    p.add_argument("--panel_size", type=int, default=192, help="width of each of the 6 panels in pixels")
    p.add_argument("--seed", type=int, default=0, help="seed of the untrained perturbators' weights")
    args = p.parse_args(argv)

    if args.protector:
        protector, _ = load_protector(args.protector)
        if not isinstance(protector, UMedProtector):
            p.error(f"{args.protector} is a {protector.name!r} protector; this figure shows UMed's two generators.")
        if args.epsilon is not None and args.epsilon != protector.epsilon:
            trained = protector
            protector = UMedProtector(**{**trained.config(), "epsilon": args.epsilon})
            protector.load_state_dict(trained.state_dict())
    else:
        torch.manual_seed(args.seed)
        channels = infer_channels([{"image": args.image}])
        protector = UMedProtector(in_channels=channels, image_size=args.image_size or 96,
                                  epsilon=args.epsilon or 4 / 255, band_width=args.band_width)
    priors = protector.priors.as_dict()
    channels = protector.in_channels
    image_size = args.image_size or protector.image_size[0]
    perturbator = protector.perturbator.eval()
    pipeline = make_pipeline(perturbator, channels, image_size, priors)
    d = pipeline({"image": args.image, "label": args.mask})
    picture = compose_picture(d, perturbator.epsilon, args.panel_size)

    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    picture.save(buf, format="PNG")
    atomic_write_bytes(out, buf.getvalue())
    dc, dt = d["delta_c"].abs().max().item(), d["delta_t"].abs().max().item()
    print(f"wrote {out} ({picture.width}x{picture.height}); |delta_c| max {dc * 255:.2f}/255, "
          f"|delta_t| max {dt * 255:.2f}/255, epsilon {perturbator.epsilon * 255:.2f}/255")
    return 0


if __name__ == "__main__":
    sys.exit(main())
