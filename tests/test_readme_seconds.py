"""The README's on_second example runs as written (against the simulator on loopback)."""
import pathlib
import re
import subprocess
import sys

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.timeout(120)
def test_readme_on_second_example_runs(tmp_path):
    block = re.search(r"```python\n(# example: on_second\n.*?)```", README.read_text(), re.S)
    assert block, "README.md lost its '# example: on_second' code block"
    script = tmp_path / "example.py"
    script.write_text(block.group(1))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=100)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert sum(" complete 2,000 of 2,000 expected" in line for line in lines) >= 2
    assert lines[-1].startswith("{'complete': ")
