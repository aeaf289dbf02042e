"""python -m trainer"""

import os
import sys

# Sinergym's progress bars (tqdm) would flood the log, and `evaluate`'s stdout, which ends with its JSON
# result: tqdm reads TQDM_DISABLE when it is first imported, so it is set before anything imports it.
os.environ.setdefault("TQDM_DISABLE", "1")

from trainer.cli import main

sys.exit(main())
