"""The README is the front door: its code runs, its commands and its config table are true."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from flask_eventlib import config

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", README, flags=re.S)


def test_python_examples_run(tmp_path: Path) -> None:
    """Blocks starting with ``# file: path`` are written out; the others run in order, as one script."""
    script = []
    for lang, code in BLOCKS:
        if lang != "python":
            continue
        first, _, rest = code.partition("\n")
        if first.startswith("# file: "):
            path = tmp_path / first.removeprefix("# file: ").strip()
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(rest)
            for parent in path.relative_to(tmp_path).parents:
                if parent != Path(".") and not (tmp_path / parent / "__init__.py").exists():
                    (tmp_path / parent / "__init__.py").write_text("")
        elif code.strip().startswith('log("deals.DealClick"'):
            continue  # the one-line teaser at the top
        else:
            script.append(code)
    assert len(script) >= 3
    (tmp_path / "readme_main.py").write_text("\n".join(script) + '\nprint("README OK")\n')
    result = subprocess.run(
        [sys.executable, "-W", "error", "readme_main.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("README OK")


def test_exactly_two_setup_commands_and_ci_runs_the_test_one() -> None:
    section = README[README.index("## Set-up") :]
    (commands,) = [code for lang, code in re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S)][:1]
    lines = [line.split("#")[0].strip() for line in commands.strip().splitlines()]
    assert lines == ["./dev.sh example", "./dev.sh test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "./dev.sh test" in ci


def test_config_table_lists_every_setting_with_its_default() -> None:
    rows = dict(re.findall(r"^\| `(EVENTLIB_\w+)` \| (.*?) \|", README, flags=re.M))
    assert sorted(rows) == sorted(config.DEFAULTS)
    for key, default in config.DEFAULTS.items():
        if key not in (config.FILESYSTEM_BROKER_DIR, config.SPOOL_PATH, config.STORE_URL):
            assert rows[key] == f"`{default!r}`".replace("'", '"'), key
