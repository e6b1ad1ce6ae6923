"""Helpers for tests that start the onepass CLI as a subprocess."""

import signal


def ctrl_c_reaches_it() -> None:
    """``preexec_fn`` for a CLI the test will Ctrl-C: a test run started in the background
    (``.ci/run &``) hands its children SIGINT ignored, as a shell does for background jobs; the
    driver must get it as a foreground command would."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
