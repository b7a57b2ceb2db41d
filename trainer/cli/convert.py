"""``splat-convert``: photos to a trainable scene (arrives with its own issue)."""

from __future__ import annotations

import sys
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    print("splat-convert: not yet available in this version of splatview "
          "(undistort COLMAP scenes with COLMAP's image_undistorter meanwhile)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
