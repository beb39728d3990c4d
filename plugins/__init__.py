"""Protocol plugins: detection from early bytes, verdicts, policy. See api.py."""

from .api import NEED_MORE, NO_MATCH, Decision, Detection, FlowView, Match, Plugin, Verdict

__all__ = [
    "NEED_MORE", "NO_MATCH", "Decision", "Detection", "FlowView", "Match", "Plugin", "Verdict",
]  # fmt: skip
