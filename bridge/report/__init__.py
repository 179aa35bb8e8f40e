"""``python -m bridge.report PIECES... -o report.html [--json report.json]``: one alignment report.

The pieces a port produced (conversion report, evaluator metadata or its diff, initcheck report, compare
JSON reports, evaluator parity tables) are recognised by their content (:mod:`.pieces`), judged per stage in
the order porters align (:mod:`.stages`), and written as one self-contained HTML page (:mod:`.html`) and
JSON (:mod:`.document`); with the two runs, the first divergent tensor is pictured (:mod:`.tensors`).
Framework-free: imports neither detectron2 nor mmdet/mmengine/mmcv. See docs/REPORT.md.
"""

from .document import build_report
from .stages import STAGES

__all__ = ["STAGES", "build_report"]
