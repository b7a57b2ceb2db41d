"""``bench/train_multi_gpu.py`` refuses bad flags with a one-line error (exit 2) before it starts
anything."""

from __future__ import annotations

import pytest

from bench.train_multi_gpu import main


@pytest.mark.parametrize("flags, message", [
    (["--profile", "-1"], "--profile takes a number of steps"),
    (["--views", "100", "--profile_from", "100"], "--profile_from 100: takes a view before --views"),
    (["--time_limit", "-1"], "--time_limit -1: takes seconds"),
    (["--profiler", "perf"], "invalid choice"),
])
def test_bad_flags_are_one_line_errors(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(flags)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert message in error[-1] and "Traceback" not in "\n".join(error)
