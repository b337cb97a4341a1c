"""Dev-prod discrepancy and data-quality checks. Pure numpy, without I/O; one check per module.

- :mod:`~streamwatch.quality.ks`: KS distance of a sample to a reference quantile sketch;
- :mod:`~streamwatch.quality.unit_change`: a feature that looks like its reference times a factor;
- :mod:`~streamwatch.quality.column_swap`: features that look like each other's references;
- :mod:`~streamwatch.quality.new_category`: values never seen in the reference;
- :mod:`~streamwatch.quality.checks`: missing, out-of-range and constant rates per batch.
"""

from streamwatch.quality.checks import QualityFinding, QualityReference, check_batch
from streamwatch.quality.column_swap import ColumnSwapResult, detect_column_swap
from streamwatch.quality.new_category import NewCategoryResult, NewCategoryTracker
from streamwatch.quality.unit_change import CONVERSIONS, Conversion, UnitChangeResult, detect_unit_change

__all__ = [
    "CONVERSIONS",
    "ColumnSwapResult",
    "Conversion",
    "NewCategoryResult",
    "NewCategoryTracker",
    "QualityFinding",
    "QualityReference",
    "UnitChangeResult",
    "check_batch",
    "detect_column_swap",
    "detect_unit_change",
]
