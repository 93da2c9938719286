"""web3 (and eth-abi, eth-utils) is the `demo` extra: only ``scanner demo`` needs it.

Checked in a subprocess whose ``sys.modules`` blocks those packages (``None`` there makes every
import of them fail), the way an install without the extra behaves, without uninstalling them.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

from scanner.cli import DEMO_EXTRA_MODULES

# The extra's own packages (requests, which web3 also brings, may well be installed without it).
EXTRA = ("web3", "eth_abi", "eth_utils")
BLOCK = "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in EXTRA)


PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0].lower() for r in requirements}


def test_web3_is_the_demo_extra_and_the_tests_install_it() -> None:
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    assert not _names(project["dependencies"]) & {"web3", "eth-abi", "eth-utils"}
    assert "pydantic-settings" not in _names(project["dependencies"])  # nothing imports it
    assert {"web3", "eth-abi", "eth-utils"} <= _names(extras["demo"])
    assert "ctrip-scanner[demo]" in extras["test"]  # .ci/setup installs .[test]


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCK + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_blocked_modules_do_not_import() -> None:
    """The test's premise: with the block in place, importing the extra's packages fails."""
    assert set(EXTRA) <= DEMO_EXTRA_MODULES
    for module in EXTRA:
        done = _python(f"import {module}\n")
        assert done.returncode == 1
        assert "ModuleNotFoundError" in done.stderr


def test_scanner_demo_without_web3_exits_2_naming_the_extra() -> None:
    done = _python("from scanner.cli import main\nsys.exit(main(['demo', '--seconds', '1']))\n")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("scanner: demo: the demo extra (web3) is not installed ")
    assert any(f"({m} is missing)" in lines[0] for m in EXTRA), lines[0]
    assert "pip install 'ctrip-scanner[demo]'" in lines[0]
    assert "Traceback" not in done.stderr


def test_every_other_module_imports_without_web3() -> None:
    """Nothing but scanner.devchain (the demo's) imports web3, eth-abi or eth-utils."""
    done = _python(
        """
        import pkgutil, importlib
        import scanner
        names = [
            m.name for m in pkgutil.walk_packages(scanner.__path__, "scanner.")
            if not m.name.startswith(("scanner.devchain", "scanner.__main__"))
        ]
        for name in names:
            importlib.import_module(name)
        from scanner.cli import main
        try:
            main(["--help"])
        except SystemExit as exc:
            assert exc.code == 0, exc.code
        assert "scanner.devchain" not in sys.modules
        print(len(names))
        """
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.strip().splitlines()[-1]) > 30
