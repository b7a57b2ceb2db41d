"""``splat-view``: the real-time viewer (arrives with its own issue)."""

from __future__ import annotations

import sys
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    print("splat-view: not yet available in this version of splatview "
          "(the viewer is being built; use the SIBR viewer on splat-train's model folders meanwhile)",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
