"""mypy checks the adapters' AWS calls against boto3's published type stubs: they must be installed,
since mypy reads a missing stub as `Any` (ignore_missing_imports) and then checks nothing."""

from __future__ import annotations

import ast
import importlib.util

from tests.conftest import REPO


def test_every_client_type_the_adapters_name_has_its_stubs_installed() -> None:
    stubs = set()
    for path in (REPO / "functions" / "pipeline" / "adapters").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mypy_boto3_"):
                stubs.add(node.module.split(".")[0])
    assert stubs >= {"mypy_boto3_s3", "mypy_boto3_sqs", "mypy_boto3_dynamodb", "mypy_boto3_sagemaker"}
    missing = sorted(name for name in stubs if importlib.util.find_spec(name) is None)
    assert not missing, f"not installed (requirements/dev.txt): {missing}"
