"""``splat-edit``: crop a model, remove floaters, and write it in the format other tools want.

    splat-edit MODEL [--iteration N] [-s SOURCE] [--crop BOX.json] [--remove-floaters STRENGTH]
               [--export ply|compressed-ply|splat|spz] -o OUT [--quiet]

MODEL is a model folder (its largest iteration, or ``--iteration N``) or a model file in any
format (PLY, compressed PLY, .splat, .spz; recognised by content). ``--crop`` keeps the Gaussians
inside an oriented box (JSON, see ``trainer/edit/crop.py``; the viewer's edit panel saves one);
``--remove-floaters`` runs the four floater rules at STRENGTH in [0, 1], the scale of the viewer's
slider (``trainer/edit/floaters.py``). The input cameras for the "unseen" rule are the dataset's
(``-s``) or the model folder's ``cameras.json``.

OUT without a file ending is a new model folder (reference layout; MODEL must be a folder); a
name ending in .ply, .compressed.ply, .splat or .spz is a file, in the format the name or
``--export`` says. Nothing is ever written over MODEL; files are written atomically. Counts go to
standard output. Exit status: 0 written, 1 a file problem or nothing left to write, 2 bad flags.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from rasterizer.files import FileFormatError
from rasterizer.formats import FORMATS
from trainer.arg_types import float_range, int_range
from trainer.edit import RULES, CropBox, EditSession, open_model, plan_output, save_edited

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="splat-edit", description=__doc__.split("\n")[0])
    parser.add_argument("model", metavar="MODEL", help="a model folder or a model file (any format)")
    parser.add_argument("-o", "--output", required=True, metavar="OUT",
                        help="a new model folder, or a file ending in .ply/.compressed.ply/.splat/.spz")
    parser.add_argument("--iteration", type=int_range(-1), default=-1, help="-1: the largest saved iteration")
    parser.add_argument("-s", "--source_path", "--source-path", dest="source_path",
                        help="dataset whose cameras the 'unseen' floater rule uses (default: the model's cameras.json)")
    parser.add_argument("--crop", metavar="BOX.json", help="keep only the Gaussians inside this oriented box")
    parser.add_argument("--remove-floaters", "--remove_floaters", dest="strength", type=float_range(0.0, 1.0), default=0.0,
                        metavar="STRENGTH",
                        help="floater cleanup strength in [0, 1] (0: none; the viewer slider's scale)")
    parser.add_argument("--export", choices=FORMATS, help="output format (default: from OUT's name; ply for a folder)")
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors")
    return parser


def report(session: EditSession, say) -> None:
    """Print what the crop box and each floater rule remove."""
    preview = session.preview()
    if session.crop is not None:
        say(f"  crop box: {int(preview.outside.sum()):,} outside")
    if session.strength > 0:
        descriptions = preview.thresholds.describe()
        say(f"  floaters at strength {session.strength:g} (scene size {session.analysis.scene_size:.4g}):")
        for rule in RULES:
            say(f"    {rule:9s} {descriptions[rule]}: {preview.rule_counts[rule]:,}")
        say(f"    removed by any rule: {int(preview.floaters.sum()):,}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    say = (lambda line: None) if args.quiet else print   # noqa: E731
    try:
        source = open_model(args.model, args.iteration, args.source_path)
        _, format_name, folder = plan_output(args.output, args.export, source)   # refuse a bad target first
        session = EditSession(source.gaussians, source.cameras)
        if args.crop:
            session.set_crop(CropBox.read(args.crop))
        session.set_strength(args.strength)
        say(f"splat-edit: {source.file}: {len(source.gaussians):,} Gaussians (SH degree "
            f"{source.gaussians.sh_degree}), {len(source.cameras)} input cameras")
        report(session, say)
        kept = session.preview().kept
        if kept == 0:
            raise ValueError(f"nothing left: the edit removes all {len(source.gaussians):,} Gaussians; nothing written")
        written = save_edited(session.result(), args.output, args.export, source)
    except (OSError, FileFormatError, ValueError, RuntimeError) as error:
        print(f"splat-edit: error: {error}", file=sys.stderr)
        return 1
    what = "model folder" if folder else format_name
    say(f"  wrote {written} ({what}): {kept:,} Gaussians ({len(source.gaussians) - kept:,} removed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
