"""make package-size's init-time measurement: a cold import, compiled as on Lambda's read-only task root."""

from __future__ import annotations

from pathlib import Path

from tools.package_size import init_seconds


def test_init_time_is_a_cold_import_that_writes_no_bytecode(tmp_path: Path) -> None:
    package, runtime = tmp_path / "package", tmp_path / "runtime"
    (package / "app").mkdir(parents=True)
    runtime.mkdir()
    (package / "app" / "__init__.py").write_text("")
    (package / "app" / "handler.py").write_text("import time\ntime.sleep(0.05)\n\ndef lambda_handler(e, c): ...\n")
    times = init_seconds(package, runtime, "app.handler.lambda_handler", {}, runs=3)
    assert len(times) == 3 and all(0.05 <= t < 5 for t in times)  # the module's own import work counts
    assert not list(package.rglob("__pycache__"))  # every run compiles, as on /var/task
