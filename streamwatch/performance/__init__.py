"""Delayed labels: the join, incremental performance metrics, concept drift and estimates."""

from streamwatch.performance.join import LabelJoin
from streamwatch.performance.tracker import PerformanceTracker

__all__ = ["LabelJoin", "PerformanceTracker"]
