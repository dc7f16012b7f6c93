"""``edgecv report``: one self-contained HTML page of what a bundle's recorded results say (runtime tier:
numpy + matplotlib, no torch, no engine)."""

from edgecv.report.build import ReportInfo, build_report

__all__ = ["ReportInfo", "build_report"]
