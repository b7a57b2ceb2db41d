"""``splat-view --train``: training in a background thread (``session``), its panel section
(``panel``) and the command that runs both with the viewer (``command``)."""
