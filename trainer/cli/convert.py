"""``splat-convert``: a folder of photos to a trainable scene, with pip alone (pycolmap).

The reference's ``convert.py`` flags and folder layout::

    splat-convert -s LOCATION [--camera OPENCV] [--skip_matching] [--skip_alignment] [--resize]
                  [--no_gpu] [--matcher exhaustive|sequential]
    splat-convert --undistort_only -s SCENE -o OUT [--images images]

Exit codes: 0 done, 1 bad input or failed conversion (one line naming the file or folder),
2 bad arguments, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from rasterizer.files import FileFormatError
from trainer.arg_types import float_range, int_range

PROG = "splat-convert"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Photos in LOCATION/input -> SfM with pycolmap -> undistorted "
        "PINHOLE scene in LOCATION/images and LOCATION/sparse/0 (the reference's convert.py layout).")
    parser.add_argument("--source_path", "-s", required=True,
                        help="LOCATION (photos in LOCATION/input); with --undistort_only the "
                             "COLMAP scene to undistort")
    parser.add_argument("--camera", default="OPENCV", help="COLMAP camera model for SfM (default OPENCV)")
    parser.add_argument("--camera_per_image", action="store_true",
                        help="give each photo its own camera (default: one shared camera, which "
                             "needs photos of one size)")
    parser.add_argument("--skip_matching", action="store_true",
                        help="undistort the existing LOCATION/distorted/sparse/0 without SfM")
    parser.add_argument("--resize", action="store_true",
                        help="also write images_2, images_4, images_8 (50/25/12.5 %%)")
    parser.add_argument("--no_gpu", action="store_true", help="CPU only (pip wheels are CPU only anyway)")
    parser.add_argument("--matcher", choices=("exhaustive", "sequential"), default="exhaustive",
                        help="exhaustive: every pair (default); sequential: neighbours in name "
                             "order (video frames)")
    parser.add_argument("--min_registered", type=float_range(0.0, 1.0), default=0.5, metavar="FRACTION",
                        help="fail when fewer than this fraction of the photos register (default 0.5)")
    parser.add_argument("--seed", type=int_range(-1, 2 ** 31 - 1), default=0, help="random seed for COLMAP (-1: random)")
    parser.add_argument("--verbose", action="store_true", help="show COLMAP's own log")
    parser.add_argument("--undistort_only", action="store_true",
                        help="undistort the COLMAP scene -s (model in sparse/0, photos in "
                             "--images) into a new PINHOLE scene folder -o, without SfM")
    parser.add_argument("--output", "-o", help="with --undistort_only: the new scene folder")
    parser.add_argument("--images", default="images",
                        help="with --undistort_only: the scene's image folder (default images)")
    # Accepted so that the reference's command lines run unchanged; pip-only has no executables.
    parser.add_argument("--colmap_executable", default="", help="ignored (pycolmap is used)")
    parser.add_argument("--magick_executable", default="", help="ignored (Pillow resizes)")
    parser.add_argument("--skip_alignment", action="store_true",
                        help="keep COLMAP's orientation instead of aligning the model to the "
                             "principal plane of its points (z up)")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and check the flags; argument errors exit 2 through argparse."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.undistort_only and not args.output:
        parser.error("--undistort_only needs -o/--output OUT (a new scene folder)")
    if args.output and not args.undistort_only:
        parser.error("-o/--output is only used with --undistort_only (the conversion writes "
                     "into LOCATION)")
    if args.undistort_only and args.skip_matching:
        parser.error("--undistort_only and --skip_matching exclude each other")
    if not args.undistort_only:
        from trainer.convert import ConvertError, camera_model_names
        try:
            models = camera_model_names()
        except ConvertError as error:
            parser.exit(1, f"{PROG}: error: {error}\n")
        if args.camera not in models:
            parser.error(f"--camera {args.camera}: unknown camera model; one of {', '.join(models)}")
    return args


def _notes(args: argparse.Namespace) -> list[str]:
    notes = []
    for flag in ("colmap_executable", "magick_executable"):
        if getattr(args, flag):
            notes.append(f"note: --{flag} is ignored: splat-convert uses pycolmap and Pillow")
    if args.skip_alignment and args.skip_matching:
        notes.append("note: --skip_alignment has no effect with --skip_matching (the model is "
                     "undistorted as it is)")
    return notes


def run(args: argparse.Namespace) -> int:
    """Convert as ``args`` say; returns the exit code."""
    from trainer.convert import ConvertOptions, convert, undistort_scene

    for note in _notes(args):
        print(note)
    source = Path(args.source_path)
    if args.undistort_only:
        count = undistort_scene(source, Path(args.output), images=args.images, resize=args.resize,
                                verbose=args.verbose)
        print(f"Done: {count} undistorted images in {Path(args.output)}; "
              f"train with `splat-train -s {args.output}`")
        return 0
    options = ConvertOptions(
        source=source, camera=args.camera, single_camera=not args.camera_per_image,
        skip_matching=args.skip_matching, resize=args.resize, use_gpu=not args.no_gpu,
        matcher=args.matcher, min_registered=args.min_registered, align=not args.skip_alignment,
        seed=None if args.seed < 0 else args.seed, verbose=args.verbose)
    result = convert(options)
    print(f"Done: {len(result.registered)} images in {source / 'images'}, model in "
          f"{source / 'sparse' / '0'}; train with `splat-train -s {source}`")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from trainer.convert import ConvertError

    try:
        return run(args)
    except (ConvertError, FileNotFoundError, FileFormatError, NotADirectoryError,
            PermissionError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted (finished files are complete; rerun to redo the rest)",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
