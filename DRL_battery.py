"""Compatibility shim: the original tool ran `python3 DRL_battery.py ...`; the trainer takes the same flags."""

import sys

from trainer.cli import main

if __name__ == "__main__":
    sys.exit(main())
