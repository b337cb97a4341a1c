"""``streamwatch report``: one self-contained HTML page a person can read.

:mod:`.sources` gathers monitors and alerts (a replay of files, or a running worker's committed
state), :mod:`.render` draws the page (inline CSS and SVG from :mod:`.svg`, words from
:mod:`.words`), and :mod:`.command` is the command-line entry. See docs/report.md.
"""

from __future__ import annotations

from streamwatch.report.render import render
from streamwatch.report.sources import ModelState, ReportInput, SourceError, from_replay, from_state

__all__ = ["ModelState", "ReportInput", "SourceError", "from_replay", "from_state", "render"]
