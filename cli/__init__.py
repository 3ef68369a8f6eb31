"""Commands for a deployed stack or the local one (`python -m cli.<command>`, from the repository's root).

They use the Lambda package's adapters and its answer contract (functions/), whose import root is
put on the path here, so that each runs as the README shows it, without PYTHONPATH."""

import sys
from pathlib import Path

_FUNCTIONS = str(Path(__file__).resolve().parents[1] / "functions")
if _FUNCTIONS not in sys.path:
    sys.path.append(_FUNCTIONS)
