"""No script reads an abbreviation as a longer option: ``--batch-size 4`` on export was once ``--batch-sizes 4``."""

import pytest

from tests.export.conftest import load_script

# (script, an abbreviation of one of its options)
CASES = [
    ("export", ["--model", "resnet18", "--batch-size", "4"]),  # --batch-sizes
    ("validate", ["artifacts/x", "--batch-size", "4"]),  # --batch-sizes
    ("infer", ["artifacts/x", "a.jpg", "--top", "3"]),  # --top-k
    ("benchmark", ["artifacts/x", "--iter", "3"]),  # --iterations
    ("loadtest", ["127.0.0.1:8000", "--model", "m", "--dur", "1"]),  # --duration
    ("serve", ["artifacts/x", "--http", "8000"]),  # --http-port
]


@pytest.mark.parametrize(("script", "argv"), CASES, ids=[c[0] for c in CASES])
def test_an_abbreviation_is_refused(script, argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_script(script).main(argv)
    assert exit_info.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err
