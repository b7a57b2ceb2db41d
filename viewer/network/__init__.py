"""``splat-view --connect``: the network viewer client thread (``client``) and the render-loop glue
that shows what it receives (``view``)."""
