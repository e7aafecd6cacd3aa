"""Human-in-the-loop: ROI accounting, a simulated annotator and a project on disk."""

from cp2_engine.hitl.accounting import ACCEPT_IOU, RoiAccounting, RoiRecord, account_rois
from cp2_engine.hitl.annotator import Correction, SimulatedAnnotator
from cp2_engine.hitl.project import HitlProject, ProjectStatus, RoundRecord

__all__ = [
    "ACCEPT_IOU",
    "Correction",
    "HitlProject",
    "ProjectStatus",
    "RoiAccounting",
    "RoiRecord",
    "RoundRecord",
    "SimulatedAnnotator",
    "account_rois",
]
