"""Mergeable, serialisable summaries of feature values: reference bins and windowed histograms."""

from streamwatch.sketches.binning import ReferenceBins
from streamwatch.sketches.window import BlockWindow

__all__ = ["BlockWindow", "ReferenceBins"]
