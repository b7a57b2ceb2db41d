"""Entry points of the ``splat-*`` commands."""
