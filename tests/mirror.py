"""Where the tests find the local data mirror: $NNSTUDY_DATA_DIR, else ../shared/datasets."""

import os
from pathlib import Path

MIRROR = Path(os.environ.get("NNSTUDY_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "datasets")
MIRROR_MISSING = (f"the local data mirror {MIRROR} does not exist; set NNSTUDY_DATA_DIR to a directory "
                  "holding adult/, boston/ and mnist-5k/ to run this test")
