"""The JS client: its unit tests (node), its build being fresh, its byte budget, its types, and how
the blueprint serves it. The browser tests are in ``tests/e2e/``.
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, render_template_string

from flask_eventlib import EventLib
from flask_eventlib.script import SCRIPT_PATH
from tests.conftest import ROOT
from tests.sample import create_app

JS = ROOT / "js"
NODE_MODULES = ROOT / "node_modules"
#: The most bytes the minified IIFE may weigh, gzipped (level 9), as the README states.
BUDGET = 1024


def node() -> str:
    found = shutil.which("node")
    if found is None:
        pytest.fail("No node on PATH. ./dev.sh test installs it (apt-get install nodejs npm).")
    return found


def node_bin(name: str) -> Path:
    found = NODE_MODULES / ".bin" / name
    if not found.exists():
        pytest.fail(f"No {found}. ./dev.sh test installs the JS dev dependencies; by hand: npm ci")
    return found


def run(*command: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(part) for part in command], cwd=cwd, capture_output=True, text=True, timeout=120)


# -- the client's own tests, build and size -------------------------------------------------------


def test_node_unit_tests_pass() -> None:
    result = run(node(), "--test", "--test-reporter=tap", *sorted(JS.glob("test/*.test.js")))
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr
    passed = int(re.search(r"^# pass (\d+)$", result.stdout, flags=re.M).group(1))  # type: ignore[union-attr]
    assert passed >= 30 and "\n# fail 0\n" in result.stdout


def test_the_served_file_is_the_build_of_the_source(tmp_path: Path) -> None:
    """flask_eventlib/static/eventlib.js is committed (pip users need no node): it must be fresh."""
    node_bin("esbuild")
    result = run(node(), JS / "build.mjs", tmp_path)
    assert result.returncode == 0, result.stderr
    built = (tmp_path / "eventlib.min.js").read_bytes()
    assert SCRIPT_PATH.read_bytes() == built, "Run `npm run build` and commit flask_eventlib/static/eventlib.js"
    esm = (tmp_path / "eventlib.js").read_text()
    assert "export {" in esm and "window" not in esm  # the ES module leaves the global alone


def gzipped_size() -> int:
    return len(gzip.compress(SCRIPT_PATH.read_bytes(), compresslevel=9, mtime=0))


def test_the_minified_client_fits_the_budget_and_the_readme_says_its_size() -> None:
    size = gzipped_size()
    assert size <= BUDGET, f"The client weighs {size} bytes gzipped; the budget is {BUDGET}"
    readme = " ".join((ROOT / "README.md").read_text().split())
    stated = re.search(
        r"\*\*([\d,]+) bytes\*\* minified and gzipped \(the budget, checked by the tests, is ([\d,]+)\)", readme
    )
    assert stated is not None, "The README states the client's gzipped size"
    assert int(stated.group(1).replace(",", "")) == size, f"Update the README: the client weighs {size} bytes"
    assert int(stated.group(2).replace(",", "")) == BUDGET


def test_the_package_json_ships_only_the_builds_and_the_types() -> None:
    package = json.loads((ROOT / "package.json").read_text())
    assert package["type"] == "module"
    assert package["sideEffects"] is False
    exports = package["exports"]["."]
    assert list(exports) == ["types", "default"], "types first, as TypeScript wants"
    shipped = set(package["files"])
    assert shipped == {"js/dist/eventlib.js", "js/dist/eventlib.min.js", "js/index.d.ts"}
    for path in [*exports.values(), package["unpkg"], package["types"], package["module"]]:
        assert path.removeprefix("./") in shipped, path
    assert package["unpkg"] == "./js/dist/eventlib.min.js"


# -- the types --------------------------------------------------------------------------------------


def tsc(*files: str | Path) -> subprocess.CompletedProcess[str]:
    return run(node_bin("tsc"), "--noEmit", "--strict", "--target", "es2020", "--lib", "es2020,dom", *files)


def test_the_types_take_names_and_data_from_the_generated_event_map(tmp_path: Path) -> None:
    """``flask eventlib types`` declares YipitEventMap; index.d.ts types log() by it."""
    app = create_app(EVENTLIB_BROKER_URL="memory://")
    result = app.test_cli_runner().invoke(args=["eventlib", "types"])
    assert result.exit_code == 0, result.output
    declarations = tmp_path / "events.d.ts"
    declarations.write_text(result.output)
    compiled = tsc(JS / "test" / "types" / "typed.ts", declarations)
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr  # and each @ts-expect-error failed


def test_without_a_generated_map_any_name_and_object_are_accepted() -> None:
    compiled = tsc(JS / "test" / "types" / "untyped.ts")
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr


def test_the_typed_calls_really_fail_without_the_expectations(tmp_path: Path) -> None:
    """The @ts-expect-error lines are what fails: without their markers tsc reports each one."""
    source = (JS / "test" / "types" / "typed.ts").read_text()
    expected = source.count("// @ts-expect-error")
    stripped = tmp_path / "typed.ts"
    stripped.write_text(source.replace("// @ts-expect-error", "//").replace("../../index.js", str(JS / "index.js")))
    app = create_app(EVENTLIB_BROKER_URL="memory://")
    (tmp_path / "events.d.ts").write_text(app.test_cli_runner().invoke(args=["eventlib", "types"]).output)
    compiled = tsc(stripped, tmp_path / "events.d.ts")
    errors = re.findall(r"^.*typed\.ts\((\d+),\d+\): error", compiled.stdout, flags=re.M)
    assert len(set(errors)) == expected, compiled.stdout


# -- serving it -------------------------------------------------------------------------------------


def make_app(tmp_path: Path, **config: Any) -> Flask:
    app = Flask("js", instance_path=str(tmp_path))
    EventLib(app, broker_url="memory://", **config)
    return app


def version() -> str:
    from flask_eventlib.script import _script

    return _script()[1]


@pytest.mark.parametrize("prefix", ["/event", "/track"])
def test_the_blueprint_serves_the_client_with_caching_headers(tmp_path: Path, prefix: str) -> None:
    client = make_app(tmp_path, url_prefix=prefix).test_client()
    response = client.get(f"{prefix}/eventlib.js")
    assert response.status_code == 200
    assert response.data == SCRIPT_PATH.read_bytes()
    assert response.mimetype == "text/javascript"
    assert response.headers["Cache-Control"] == "public, max-age=86400"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    etag = response.headers["ETag"]
    assert etag == f'"{version()}"'
    again = client.get(f"{prefix}/eventlib.js", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.data == b""
    # Under the versioned URL the template helper renders: cached for a year.
    versioned = client.get(f"{prefix}/eventlib.js?v={version()}")
    assert versioned.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    stale = client.get(f"{prefix}/eventlib.js?v=0123456789abcdef")
    assert stale.headers["Cache-Control"] == "public, max-age=86400"


def test_loading_the_client_does_not_count_against_the_endpoint_rate_limit(tmp_path: Path) -> None:
    client = make_app(tmp_path, rate_limit="2/minute").test_client()
    assert [client.get("/event/eventlib.js").status_code for _ in range(5)] == [200] * 5
    statuses = [client.post("/event/log", json={"event": "x.Y"}).status_code for _ in range(3)]
    assert statuses == [404, 404, 429]


@pytest.mark.parametrize(
    ("config", "template", "tag"),
    [
        (
            {},
            "{{ eventlib_script() }}",
            '<script src="/event/eventlib.js?v={v}" data-endpoint="/event/log"></script>',
        ),
        (
            {"url_prefix": "/track"},
            "{{ eventlib_script() }}",
            '<script src="/track/eventlib.js?v={v}" data-endpoint="/track/log"></script>',
        ),
        (
            {},
            "{{ eventlib_script('https://events.example.com/event/log', defer=True, nonce=n, data_x=None) }}",
            '<script src="/event/eventlib.js?v={v}" data-endpoint="https://events.example.com/event/log" defer '
            'nonce="a&#34;&gt;b"></script>',
        ),
    ],
)
def test_eventlib_script_renders_the_script_tag(
    tmp_path: Path, config: dict[str, Any], template: str, tag: str
) -> None:
    app = make_app(tmp_path, **config)
    with app.test_request_context():
        assert render_template_string(template, n='a">b') == tag.format(v=version())


def test_eventlib_script_follows_the_app_mount_point(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    with app.test_request_context(base_url="http://localhost/shop"):
        rendered = render_template_string("{{ eventlib_script() }}")
    assert 'src="/shop/event/eventlib.js?v=' in rendered and 'data-endpoint="/shop/event/log"' in rendered


def test_without_the_http_endpoint_there_is_no_client(tmp_path: Path) -> None:
    app = make_app(tmp_path, http_enabled=False)
    assert app.test_client().get("/event/eventlib.js").status_code == 404
    assert "eventlib_script" not in app.jinja_env.globals
