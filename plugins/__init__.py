"""Protocol plugins: detection from early bytes, verdicts, policy. See api.py."""

from .api import NEED_MORE, NO_MATCH, Detection, FlowView, Match, Plugin, Verdict

__all__ = ["NEED_MORE", "NO_MATCH", "Detection", "FlowView", "Match", "Plugin", "Verdict"]
