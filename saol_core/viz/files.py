"""Figure files: PNGs that remember the run they were drawn from."""
from __future__ import annotations

from pathlib import Path

def save(fig, path: str | Path, source: str | None = None) -> Path:
    """Write ``fig`` as a PNG; ``source`` (e.g. the run a map was drawn from) goes into the file's
    metadata, so a report regenerated after the checkpoint is gone can still name it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Source": source} if source else None)
    return path


def figure_source(path: str | Path) -> str | None:
    """The ``source`` that :func:`save` wrote into a PNG, or None."""
    from PIL import Image
    with Image.open(path) as image:
        return image.info.get("Source")
