"""The README's set-up commands and CI cannot drift apart."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def setup_commands() -> list[str]:
    block = re.search(r"## Set-up\n.*?```bash setup\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert block, "README.md needs a '## Set-up' section with one code block"
    return [line for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]


def test_readme_has_two_setup_commands_install_with_demo_and_tests():
    install, tests = setup_commands()
    assert "pip install -r requirements.txt" in install and "--demo" in install
    assert tests.strip() == ".venv/bin/python -m pytest"


def test_ci_installs_what_the_readme_installs_and_runs_its_test_command():
    install, tests = setup_commands()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python3 -m venv .venv" in install and "python3 -m venv .venv" in ci
    assert re.search(r"\.venv/bin/pip install .*-r requirements\.txt", ci)
    assert ci.strip().splitlines()[-1] == tests.strip()


def test_torch_is_pinned_to_the_cpu_wheel_on_disk():
    assert "torch==2.13.0" in (ROOT / "requirements.txt").read_text().splitlines()
