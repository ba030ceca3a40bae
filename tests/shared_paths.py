"""Where the tests find repository files and the shared data beside the checkout.

`../shared` holds data that must not be copied into this repository (the real lyric vocabulary);
`ACESTEP_SHARED_DIR` points elsewhere when the checkout is not beside it.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("ACESTEP_SHARED_DIR", REPO_ROOT.parent / "shared"))
REAL_LYRIC_VOCAB = SHARED_DIR / "data" / "acestep-v1-lyric-vocab.json"
