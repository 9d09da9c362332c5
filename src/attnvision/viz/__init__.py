"""Pictures: heatmaps, patch grids, attention overlays and the course's figures."""
