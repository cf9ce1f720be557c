"""``python -m dagserve``: the same command line as the ``dagserve`` script.

For environments where the script is not on ``PATH`` (a venv not activated, a
clone run without installing), as ``python -m pip`` is for pip.
"""

from __future__ import annotations

import sys

from dagserve.cli import main

if __name__ == "__main__":
    sys.exit(main())
