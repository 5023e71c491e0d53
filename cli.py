#!/usr/bin/env python3
"""Run ckptkit from a checkout without installing it: `python cli.py ls model.ckpt`."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ckptkit.cli import main

if __name__ == "__main__":
    main()
