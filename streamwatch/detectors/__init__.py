"""Drift detectors. Each module holds one detector; all are pure numpy, without I/O."""

from streamwatch.detectors.psi import PSI, psi

__all__ = ["PSI", "psi"]
