#!/usr/bin/env python3
"""Compatibility shim: the original tool ran `python cloud_manager.py ...`; publisher.py takes the same flags.

Kept so that the commands in the original documentation run unchanged. New work: ``python publisher.py``.
"""

import sys

from sinergym_cloud.publisher.commands import main

if __name__ == "__main__":
    sys.exit(main())
