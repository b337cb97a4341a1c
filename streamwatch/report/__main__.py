"""``python -m streamwatch.report ...``: the report command on its own."""

from __future__ import annotations

import sys

from streamwatch.report.command import main

if __name__ == "__main__":  # not on import (pytest collects doctests from every module)
    sys.exit(main())
