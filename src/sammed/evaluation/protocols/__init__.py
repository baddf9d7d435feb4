"""The named evaluation protocols (``sammed eval --protocol NAME``).

=======================  ==  =============================================================
name                     D   what it reproduces
=======================  ==  =============================================================
``sam-med3d-official``   3   current official SAM-Med3D inference + ``compute_metrics``
``sam-med3d-paper``      3   the paper-era ``validation.py`` (RITM then random clicks, ROI Dice)
``sam-med2d``            2   SAM-Med2D ``test.py``: box, 1 / 3 / 5 points
``cvpr25``               3   CVPR 2025 interactive challenge: box + 5 EDT-centre clicks, AUCs
``clicks-N``             3   N clicks through the prompt-centred pipeline users run
=======================  ==  =============================================================

``clicks-N`` takes N from ``--clicks``; ``clicks-5`` is accepted as a shorthand.
"""

from __future__ import annotations

import re
from typing import Optional

from sammed.errors import SammedError
from sammed.evaluation.protocols.base import (
    ROW_COLUMNS,
    TIMING_COLUMNS,
    CaseResult,
    EvalSettings,
    Preview,
    Protocol,
    Target,
)
from sammed.evaluation.protocols.clicks import ClicksProtocol
from sammed.evaluation.protocols.cvpr25 import Cvpr25Protocol
from sammed.evaluation.protocols.med2d import Med2DProtocol
from sammed.evaluation.protocols.official import OfficialProtocol
from sammed.evaluation.protocols.paper import PaperProtocol

__all__ = [
    "PROTOCOLS",
    "DEFAULT_CLICKS",
    "ROW_COLUMNS",
    "TIMING_COLUMNS",
    "CaseResult",
    "EvalSettings",
    "Preview",
    "Protocol",
    "Target",
    "get_protocol",
    "resolve_protocol",
]

PROTOCOLS: dict[str, type[Protocol]] = {
    cls.name: cls for cls in (OfficialProtocol, PaperProtocol, Med2DProtocol, Cvpr25Protocol, ClicksProtocol)
}
DEFAULT_CLICKS = 5
_CLICKS_N = re.compile(r"^clicks-(\d+)$")


def get_protocol(name: str) -> Protocol:
    """A fresh protocol object by exact name."""
    if name not in PROTOCOLS:
        raise SammedError(f"unknown protocol {name!r}; available: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]()


def resolve_protocol(name: str, clicks: Optional[int]) -> tuple[Protocol, int]:
    """The protocol and its number of clicks from ``--protocol`` and ``--clicks``."""
    match = _CLICKS_N.match(name)
    if match:
        n = int(match.group(1))
        if clicks is not None and clicks != n:
            raise SammedError(f"--protocol {name} asks for {n} clicks but --clicks says {clicks}")
        name, clicks = "clicks-N", n
    count = DEFAULT_CLICKS if clicks is None else clicks
    if count < 1:
        raise SammedError(f"--clicks must be at least 1, got {count}")
    return get_protocol(name), count
