#!/usr/bin/env python3
"""Send a batch of Sinergym experiments to run on Compute Engine or the local cloud.

The successor of the original cloud_manager.py, with the same flags. ``python publisher.py --help``.
"""

import sys

from sinergym_cloud.publisher.commands import main

if __name__ == "__main__":
    sys.exit(main())
