"""How this process runs: its run mode (chosen by the CLI's flags and subcommands).

`GET /api/status` reports it as `mode` and the console's status line shows it. In code the
word "mode" alone means a Textual mode of the console (one of its tabs,
`console/screens/tabs.py`); a run mode is always `RunMode`.
"""

from __future__ import annotations

from enum import StrEnum


class RunMode(StrEnum):
    STANDALONE = "standalone"
    """The console with the backend services in this process (no flag)."""
    DEMO = "demo"
    """Standalone plus a simulated fleet (`--demo`)."""
    HEADLESS = "headless"
    """The backend services only (`--headless`)."""
    ATTACH = "attach"
    """The console over a running backend's REST API (`attach`)."""
