"""Top-level ``-v``/``-vv``/``-q`` and Python warnings routed through logging (issue 18 item 7).

A stand-in for ``diffrecon info`` logs one record per level and raises warnings of each kind; the tests
check which lines reach stderr at each verbosity, that each is one ``diffrecon: LEVEL: ...`` line, and
that nothing stays configured after the command.
"""

from __future__ import annotations

import logging
import pathlib
import warnings

import pytest
import torch

import diffrecon
from diffrecon import logs
from diffrecon.cli import main

OWN_FILE = str(pathlib.Path(diffrecon.__file__).parent / "recon" / "analytic.py")
TORCH_FILE = "/venv/lib/python3.11/site-packages/torch/jit/_script.py"


def _noisy_command(args) -> int:
    log = logging.getLogger("diffrecon.test")
    log.debug("a debugging detail")
    log.info("a progress note")
    log.warning("a user-relevant warning\nspread over two lines")
    warnings.warn_explicit("diffrecon's own warning", UserWarning, OWN_FILE, 7)
    warnings.warn_explicit("torch is deprecating this", DeprecationWarning, TORCH_FILE, 1489)
    warnings.warn_explicit("pandas will change this", FutureWarning,
                           "/usr/lib/python3/dist-packages/pandas/core/frame.py", 12)
    warnings.warn_explicit("monai says:\n  optional package missing", UserWarning,
                           "/venv/lib/python3.11/site-packages/monai/utils/module.py", 3)
    _noisy_command.seen_quiet = getattr(args, "quiet", None)
    return 0


@pytest.fixture
def noisy(monkeypatch):
    import diffrecon.commands.info as info

    monkeypatch.setattr(info, "run", _noisy_command)
    return ["info"]


def _stderr(capsys, argv):
    capsys.readouterr()
    assert main(argv) == 0
    return capsys.readouterr().err.splitlines()


def test_levels_and_defaults():
    assert logs.level_for() == logging.WARNING
    assert logs.level_for(1) == logging.INFO
    assert logs.level_for(2) == logging.DEBUG == logs.level_for(5)
    assert logs.level_for(2, quiet=True) == logging.ERROR


def test_default_shows_warnings_and_hides_third_party_deprecations(noisy, capsys):
    lines = _stderr(capsys, noisy)
    assert lines == [
        "diffrecon: warning: a user-relevant warning spread over two lines",
        "diffrecon: warning: diffrecon's own warning",
        "diffrecon: warning: monai says: optional package missing [UserWarning from monai/utils/module.py:3]",
    ]


def test_verbose_adds_notes_and_third_party_deprecations_as_one_line_warnings(noisy, capsys):
    lines = _stderr(capsys, ["-v", *noisy])
    assert "diffrecon: info: a progress note" in lines
    torch_line = "torch is deprecating this [DeprecationWarning from torch/jit/_script.py:1489]"
    assert f"diffrecon: warning: {torch_line}" in lines
    assert "diffrecon: warning: pandas will change this [FutureWarning from pandas/core/frame.py:12]" in lines
    assert not any("debugging" in line for line in lines)
    assert len(lines) == 6 and all(line.startswith("diffrecon: ") for line in lines)


def test_very_verbose_adds_debug(noisy, capsys):
    lines = _stderr(capsys, ["-vv", *noisy])
    assert "diffrecon: debug: a debugging detail" in lines
    assert any(line.startswith("diffrecon: debug: diffrecon info: arguments ") for line in lines)
    assert len(lines) == 8


def test_quiet_shows_errors_only_and_silences_progress(noisy, capsys, tmp_path):
    assert _stderr(capsys, ["-q", *noisy]) == []
    # an error stays one line at any verbosity
    capsys.readouterr()
    assert main(["-q", "reconstruct", str(tmp_path / "missing.npz"), str(tmp_path / "o.nii.gz"),
                 "--method", "fbp"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("diffrecon reconstruct: error: ")


def test_top_level_quiet_implies_the_commands_quiet(monkeypatch, capsys):
    import diffrecon.commands.reconstruct as reconstruct

    seen = {}
    monkeypatch.setattr(reconstruct, "run", lambda args: seen.update(quiet=args.quiet) or 0)
    assert main(["-q", "reconstruct", "in.npz", "out.nii.gz", "--method", "fbp"]) == 0
    assert seen["quiet"] is True
    assert main(["reconstruct", "in.npz", "out.nii.gz", "--method", "fbp"]) == 0
    assert seen["quiet"] is False
    assert main(["reconstruct", "in.npz", "out.nii.gz", "--method", "fbp", "--quiet"]) == 0
    assert seen["quiet"] is True


def test_quiet_and_verbose_together_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["-q", "-v", "info"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("diffrecon: error: ") and "not allowed with" in err[0]


def test_a_real_torch_deprecation_is_shown_only_with_verbose(monkeypatch, capsys):
    """torch's own ``torch.jit.script`` DeprecationWarning (hidden by Python outside ``__main__``)."""
    def scripting(args) -> int:
        torch.jit.script(_plus_one)
        return 0

    import diffrecon.commands.info as info

    monkeypatch.setattr(info, "run", scripting)
    quiet_lines = _stderr(capsys, ["info"])
    assert not any("deprecated" in line for line in quiet_lines)
    lines = [line for line in _stderr(capsys, ["-v", "info"]) if "jit.script" in line]
    if not lines:
        pytest.skip(f"torch {torch.__version__} does not deprecate torch.jit.script")
    assert lines[0].startswith("diffrecon: warning: `torch.jit.script` is deprecated")
    assert "[DeprecationWarning from torch/jit/" in lines[0]


def _plus_one(x: torch.Tensor) -> torch.Tensor:
    return x + 1


def test_nothing_stays_configured_after_the_command(noisy, capsys):
    logger = logging.getLogger("diffrecon")
    before = (logger.level, logger.propagate, list(logger.handlers), warnings.showwarning,
              list(warnings.filters))
    _stderr(capsys, ["-vv", *noisy])
    with pytest.raises(SystemExit):
        main(["-v", "reconstruct"])  # a usage error
    capsys.readouterr()
    assert (logger.level, logger.propagate, list(logger.handlers), warnings.showwarning,
            list(warnings.filters)) == before


def test_is_third_party():
    assert not logs.is_third_party(OWN_FILE)
    assert logs.is_third_party(TORCH_FILE)
    assert logs.is_third_party("<string>")
