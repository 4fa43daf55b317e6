"""Run modes: standalone console, headless backend, demo, attach, simulate."""

from __future__ import annotations

import argparse
import sys


def run_mode(args: argparse.Namespace) -> int:
    """Start the requested long-running mode."""
    name = args.command or ("headless" if args.headless else "demo" if args.demo else "console")
    print(f"error: the {name} mode is not available in this build yet", file=sys.stderr)
    return 2
