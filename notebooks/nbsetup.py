"""Setup shared by the notebooks: reduced sizes, where figures go, saving them headless.

* ``QUICK``: ``MEANFIELD_NOTEBOOK_QUICK=1`` runs every notebook at reduced sizes (the test
  suite); its widths pad to few compiled shapes (chunks of 8 particles: m = 98 and 104 share
  one), because compiling, not integrating, is most of a quick run's time;
* ``Outputs(name)``: the directory ``$MEANFIELD_NOTEBOOK_OUT/name`` (default
  ``notebook_outputs/name``) and ``save(fig, stem)``, which writes ``stem.png`` there (at
  ``DPI``, lower in quick runs) and, in Jupyter, also shows the figure.

Imported first: run as a plain script (no IPython kernel) it selects matplotlib's off-screen
Agg backend, so the notebooks draw and write their figures on a headless machine.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import matplotlib

if "ipykernel" not in sys.modules:
    matplotlib.use("Agg")

QUICK = os.environ.get("MEANFIELD_NOTEBOOK_QUICK") == "1"
DPI = 60 if QUICK else 100  # rendering the figures is a fifth of a quick run


class Outputs:
    """Output directory of one notebook (created)."""

    def __init__(self, name: str):
        self.dir = Path(os.environ.get("MEANFIELD_NOTEBOOK_OUT", "notebook_outputs")) / name
        self.dir.mkdir(parents=True, exist_ok=True)

    def save(self, fig, stem: str) -> Path:
        """Write ``fig`` to ``dir/stem.png``, show it in Jupyter, close it."""
        import matplotlib.pyplot as plt

        path = self.dir / f"{stem}.png"
        fig.savefig(path, dpi=DPI)
        print("wrote", path)
        if "ipykernel" in sys.modules:
            from IPython.display import display

            display(fig)
        plt.close(fig)
        return path
