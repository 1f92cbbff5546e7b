"""One updating line on the terminal while a long step runs (a build, a measurement's windows).

"torch-cpu batch 16: window 3 of 10, 812.3 samples/s" replaces itself in place, through pytest's
own terminal writer, and is erased when the test's step ends, with the line pytest had started
("demo/resnet.pt2 ..." or a -v test id) written back, so pytest's output reads as if it had never
been there. It is shown only where that is safe: a terminal (not a log file or a pipe), not an
xdist worker (whose output the controller owns), and not under -qq.
"""

from __future__ import annotations

import time
from typing import Any

#: Updates closer together than this are skipped (a terminal is not a log).
MIN_INTERVAL_S = 0.1


class ProgressLine:
    def __init__(self, config: Any) -> None:
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        self.enabled = bool(
            reporter is not None
            and reporter.isatty()
            and not hasattr(config, "workerinput")
            and config.get_verbosity() > -2
        )
        self._tw = config.get_terminal_writer() if self.enabled else None
        self._saved: str | None = None
        self._last = 0.0

    def __call__(self, text: str) -> None:
        """Show `text` on the current line, replacing the previous progress text."""
        if self._tw is None:
            return
        now = time.monotonic()
        if self._saved is not None and now - self._last < MIN_INTERVAL_S:
            return
        self._last = now
        if self._saved is None:
            self._saved = getattr(self._tw, "_current_line", "")
        width = max(20, self._tw.fullwidth - 1)
        self._tw.write_raw("\r" + text[:width].ljust(width), flush=True)

    def clear(self) -> None:
        """Erase the progress text and put back the line pytest had written."""
        if self._tw is None or self._saved is None:
            return
        width = max(20, self._tw.fullwidth - 1)
        self._tw.write_raw("\r" + " " * width + "\r" + self._saved, flush=True)
        self._saved = None
