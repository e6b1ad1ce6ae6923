"""The suite's own rules (tests/conftest.py): only GPU tests may skip, nothing may xfail; checked
by running pytest on small test files under this conftest."""

import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _outcomes(tmp_path: Path, body: str) -> str:
    shutil.copy(HERE / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    gpu: needs a GPU\n")
    (tmp_path / "test_rules_case.py").write_text(body)
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA", str(tmp_path)],
                       capture_output=True, text=True, cwd=tmp_path, timeout=300)
    return r.stdout + r.stderr


def test_skips_and_xfails_fail_unless_the_test_needs_a_gpu(tmp_path):
    out = _outcomes(tmp_path, '''import pytest

def test_skipped():
    pytest.skip("no tool")

@pytest.mark.xfail(reason="known bug")
def test_xfailed():
    assert False

@pytest.mark.xfail(reason="known bug")
def test_xpassed():
    assert True

@pytest.mark.gpu
def test_gpu_only():
    pytest.skip("no GPU")

def test_plain():
    assert True
''')
    assert "3 failed, 1 passed, 1 skipped" in out, out
    assert "only GPU tests may skip" in out and "xfail is not allowed" in out


def test_a_module_that_skips_at_import_fails(tmp_path):
    out = _outcomes(tmp_path, 'import pytest\n\npytest.importorskip("a_module_nobody_has")\n\ndef test_x():\n    pass\n')
    assert "skipped at import, but only GPU tests may skip" in out and "1 error" in out, out
