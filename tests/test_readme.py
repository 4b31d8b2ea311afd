"""The README is the front door: its code runs, its commands and its config table are true."""

from __future__ import annotations

import re
from pathlib import Path

from flask_eventlib import config
from tests.markdown import run_page

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", README, flags=re.S)


def test_python_examples_run(tmp_path: Path) -> None:
    """Blocks starting with ``# file: path`` are written out; the others run in order, as one script."""
    run = run_page(README, tmp_path, skip=lambda code: code.strip().startswith('log("deals.DealClick"'))
    assert run.script_blocks >= 3
    assert run.ok, run.output


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
        if key not in (config.FILESYSTEM_BROKER_DIR, config.SPOOL_PATH, config.STORE_URL, config.LOCAL_LOG_DIR):
            assert rows[key] == f"`{default!r}`".replace("'", '"'), key
