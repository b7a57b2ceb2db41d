"""Helpers shared by the viewer tests that run Dear PyGui in a child process (no test here, and no
module-level skip, so that importing it never skips the importing module)."""

import json
import subprocess

import pytest


def child_state(result: subprocess.CompletedProcess) -> dict:
    """The last ``STATE{json}`` line of a Dear PyGui child process; skips where the child could
    not get a GL 4.3 context (it printed NOGL) or a DPG viewport (DPG aborts the process)."""
    if "NOGL" in result.stdout:
        pytest.skip("no GL 4.3 context here")
    if result.returncode < 0 or "could not create the control panel" in result.stderr:
        pytest.skip(f"Dear PyGui could not open a viewport here (rc {result.returncode}): {result.stderr[-300:]}")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("STATE")]
    assert lines, result.stdout + result.stderr
    return json.loads(lines[-1][len("STATE"):])
