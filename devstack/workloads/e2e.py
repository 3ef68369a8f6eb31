"""`make e2e` without STACK: the acceptance run (cli/e2e.py) against the local stack, started for it
with the template's defaults and a small model, as CI runs it.

    python -m devstack.workloads.e2e [--deadline 300]"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

from cli import e2e
from devstack.aws.container import ContainerFailed
from devstack.aws.host import stop_on_signals
from devstack.aws.stack import Stack, StackFailed, StackOptions
from devstack.workloads.quickmodel import train_small_model
from infra.predictions import Predictions


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deadline", type=float, default=300, help="seconds to wait for every outcome")
    return parser


def run(deadline_s: float) -> int:
    with tempfile.TemporaryDirectory(prefix="dogbreed-e2e-") as tmp:
        model = train_small_model()
        print("starting the local stack with the template's defaults ...", flush=True)
        with Stack(StackOptions(model_archive=model.archive, workdir=Path(tmp) / "stack")) as stack:
            predictions = Predictions(stack.client("dynamodb", observer=True), stack.names.table)
            seen = e2e.run(stack.client("s3", observer=True), predictions, stack.names.bucket, deadline_s=deadline_s)
            stack.check()
    print(e2e.report(seen))
    return 0 if all(item.ok for item in seen) else 1


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    stop_on_signals()
    try:
        return run(args.deadline)
    except (StackFailed, ContainerFailed) as exc:
        print(f"\nmake e2e stopped: {exc}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))  # with the Makefile's IMPORT_PATH (make e2e sets it)
