"""Drift detectors. Each module holds one detector; all are pure numpy, without I/O."""

from streamwatch.detectors.adwin import ADWIN
from streamwatch.detectors.base import Detection, Detector, SnapshotError
from streamwatch.detectors.cusum import CUSUM
from streamwatch.detectors.ddm import DDM
from streamwatch.detectors.hddm import HDDMA
from streamwatch.detectors.page_hinkley import PageHinkley
from streamwatch.detectors.psi import psi
from streamwatch.detectors.window import FeatureWindowTests, WindowTest, statistic

__all__ = [
    "ADWIN",
    "CUSUM",
    "DDM",
    "HDDMA",
    "Detection",
    "Detector",
    "FeatureWindowTests",
    "PageHinkley",
    "SnapshotError",
    "WindowTest",
    "psi",
    "statistic",
]
