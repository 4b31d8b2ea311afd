"""Run the code of a Markdown page, so the README and the docs/ guide stay true.

- A ```python block whose first line is ``# file: path`` is written to ``path`` (packages get an
  ``__init__.py``).
- The other ```python blocks run in order, as one script, in a fresh interpreter with
  ``-W error``, in the folder the files were written to.
- A ```console block lists ``$ flask ...`` commands, each followed by its expected output; they
  run in that folder before the script (which may read what ``> file`` wrote), and their output
  (stdout and stderr) must match.
- A block inside an HTML comment (``<!-- ... -->``) runs like the others but is not shown on the
  page: it holds set-up or checks that would clutter the text.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

BLOCK = re.compile(r"```(\w+)\n(.*?)```", flags=re.S)
DONE = "MARKDOWN SCRIPT OK"


def blocks(text: str) -> list[tuple[str, str]]:
    """``(language, code)`` of every fenced block, in order."""
    return BLOCK.findall(text)


@dataclass
class Run:
    """What running a page did."""

    files: list[Path] = field(default_factory=list)
    script_blocks: int = 0
    result: subprocess.CompletedProcess[str] | None = None
    #: ``(command, expected, actual)`` for each console command.
    commands: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def output(self) -> str:
        return "" if self.result is None else self.result.stdout + self.result.stderr

    @property
    def ok(self) -> bool:
        """The script ran to its end (or there was none)."""
        if self.result is None:
            return True
        return self.result.returncode == 0 and self.result.stdout.strip().endswith(DONE)


def write_files(text: str, folder: Path) -> list[Path]:
    """Write the ``# file:`` blocks of ``text`` under ``folder``; return their paths."""
    written = []
    for lang, code in blocks(text):
        first, _, rest = code.partition("\n")
        if lang != "python" or not first.startswith("# file: "):
            continue
        path = folder / first.removeprefix("# file: ").strip()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rest)
        for parent in path.relative_to(folder).parents:
            init = folder / parent / "__init__.py"
            if parent != Path(".") and not init.exists():
                init.write_text("")
        written.append(path)
    return written


def run_page(
    text: str,
    folder: Path,
    *,
    skip: Callable[[str], bool] = lambda code: False,
    timeout: float = 120,
) -> Run:
    """Write the files of ``text``, run its console commands, then its script (see the module doc).

    :param skip: blocks for which it returns true are neither written nor run.
    """
    run = Run(files=write_files(text, folder))
    for lang, code in blocks(text):
        if lang == "console":
            for command, expected in _commands(code):
                actual = _run_command(command, folder, timeout)
                run.commands.append((command, expected, actual))
    script = [
        code for lang, code in blocks(text) if lang == "python" and not code.startswith("# file: ") and not skip(code)
    ]
    run.script_blocks = len(script)
    if script:
        (folder / "markdown_main.py").write_text("\n".join(script) + f"\nprint({DONE!r})\n")
        run.result = subprocess.run(
            [sys.executable, "-W", "error", "markdown_main.py"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    return run


def _commands(code: str) -> list[tuple[str, str]]:
    commands: list[tuple[str, str]] = []
    for line in code.splitlines():
        if line.startswith("$ "):
            commands.append((line[2:], ""))
        elif commands:
            command, expected = commands[-1]
            commands[-1] = (command, expected + line + "\n")
    return commands


def _run_command(command: str, folder: Path, timeout: float) -> str:
    argv = shlex.split(command.split(" > ")[0])
    if argv[0] != "flask":
        raise ValueError(f"console blocks run flask commands only, not {command!r}")
    # The `flask` script of this interpreter, so that usage lines read as on the page.
    script = Path(sys.executable).with_name("flask")
    flask = [str(script)] if script.exists() else [sys.executable, "-m", "flask"]
    path = [os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []
    result = subprocess.run(
        [*flask, *argv[1:]],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONWARNINGS": "error", "PYTHONPATH": os.pathsep.join([str(folder), *path])},
    )
    output = result.stdout + result.stderr
    if " > " in command:  # `flask eventlib types > events.d.ts`: keep the file, show nothing
        (folder / command.split(" > ")[1].strip()).write_text(result.stdout)
        output = result.stderr
    return output
