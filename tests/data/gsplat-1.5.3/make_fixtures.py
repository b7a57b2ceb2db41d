"""Write the files in this folder with gsplat 1.5.3's ``gsplat.exporter.export_splats``.

    pip install --no-deps gsplat==1.5.3    # its exporter needs only torch and numpy
    python3 tests/data/gsplat-1.5.3/make_fixtures.py

The Gaussians are synthetic (made here from a seeded generator, no scene data): 300 of them at
SH degree 3, in three clusters (so that compressed chunks differ), with log-scales, opacities
and colours in the ranges trained models have, plus two nearly transparent ones that gsplat's
compressed writer drops. ``model.ply`` is lossless and is the source the tests compare the
other files with. tests/test_formats.py re-runs this when gsplat is importable and checks the
bytes are unchanged.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

FOLDER = Path(__file__).parent
FILES = {"ply": "model.ply", "splat": "model.splat", "ply_compressed": "model.compressed.ply"}


def synthetic_gaussians(count: int = 300) -> dict[str, torch.Tensor]:
    """The fixture's raw parameters (float32, CPU), gsplat's argument names."""
    generator = torch.Generator().manual_seed(16)
    normal = lambda *shape: torch.randn(*shape, generator=generator)  # noqa: E731
    centres = torch.tensor([[0.0, 0.0, 0.0], [3.0, -1.0, 2.0], [-2.0, 1.5, -4.0]])
    means = centres[torch.arange(count) % 3] + 0.5 * normal(count, 3)
    opacities = 2.0 * normal(count)
    opacities[:2] = -8.0   # sigmoid ~ 0.0003 < 1/255
    return {
        "means": means,
        "scales": -3.0 + 0.7 * normal(count, 3),
        "quats": normal(count, 4),
        "opacities": opacities,
        "sh0": 0.8 * normal(count, 1, 3),
        "shN": 0.15 * normal(count, 15, 3),
    }


def export(folder: Path = FOLDER) -> None:
    from gsplat.exporter import export_splats  # noqa: PLC0415

    splats = synthetic_gaussians()
    for format_name, name in FILES.items():
        export_splats(**splats, format=format_name, save_to=str(folder / name))


if __name__ == "__main__":
    export(Path(sys.argv[1]) if len(sys.argv) > 1 else FOLDER)
