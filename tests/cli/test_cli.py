"""The `gradguard` command itself."""

import pytest

from gradguard.cli import main


def test_version(capsys):
    import gradguard

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"gradguard {gradguard.__version__}"
    from importlib.metadata import version

    assert gradguard.__version__ == version("gradguard")
