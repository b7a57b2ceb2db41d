"""splatview's trainer layer: scene loading, optimisation and the command-line tools."""
