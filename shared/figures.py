"""How every figure is written: PNG for looking, SVG (text kept as text) for papers."""

from __future__ import annotations

from pathlib import Path

from matplotlib import rc_context
from matplotlib.figure import Figure

#: The axis label every figure uses for hidden states (see ``serlens.shared.hidden_states``).
HIDDEN_STATE_LABEL = "hidden state (0 = CNN projection + positional conv.)"


def save_figure(fig: Figure, stem: str | Path, *, dpi: int = 150, tight: bool = False) -> list[Path]:
    """Write ``stem.png`` and ``stem.svg``; returns both paths.

    Args:
        fig: the figure.
        stem: path without suffix; its folder is created.
        dpi: resolution of the PNG.
        tight: crop to the drawn area (``bbox_inches="tight"``).
    """
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".svg")]
    bbox = "tight" if tight else None
    fig.savefig(paths[0], dpi=dpi, bbox_inches=bbox)
    # Keep SVG text as text (editable, searchable) instead of glyph outlines.
    with rc_context({"svg.fonttype": "none"}):
        fig.savefig(paths[1], bbox_inches=bbox)
    return paths
