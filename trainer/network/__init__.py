"""The network viewer port of ``splat-train`` (graphdeco's protocol plus splatview's extension)."""
