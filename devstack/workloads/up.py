"""`make stack`: the local stack (devstack.aws.stack) kept up until Ctrl-C, for a user's uploads with the
AWS CLI or boto3 and queries with `python -m cli.query`.

    python -m devstack.workloads.up [--model model.tar.gz] [--parameter Key=Value ...]

Ctrl-C, SIGTERM or SIGHUP stops every process of the stack and exits 0; a part of the stack that
cannot run on this machine stops it at once with the reason and exit status 1."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from devstack.aws.host import Stopped, stop_on_signals
from devstack.aws.stack import REPO, Stack, StackFailed, StackOptions
from devstack.workloads.quickmodel import train_small_model


def venv_command(name: str) -> str:
    """A program of this Python's environment (the AWS CLI, python), as a user types it from the
    repository root: `.venv/bin/aws` when run by make."""
    path = Path(sys.executable).parent / name
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model", type=Path, help="a model.tar.gz from model/training/train.py (default: train a small one)"
    )
    parser.add_argument("--workdir", type=Path, default=REPO / ".devstack", help="logs and unpacked models")
    parser.add_argument("--moto-port", type=int, default=5000)
    parser.add_argument("--runtime-port", type=int, default=8080)
    parser.add_argument(
        "--parameter", action="append", default=[], metavar="KEY=VALUE", help="a template parameter override"
    )
    parser.add_argument("--visibility-timeout", type=int, help="shorten the queue's VisibilityTimeout (seconds)")
    return parser


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for noisy in ("werkzeug", "botocore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    stop_on_signals()
    args.workdir.mkdir(parents=True, exist_ok=True)
    model = args.model
    if model is None:
        print("no --model given: training a small one on generated images ...", flush=True)
        model = train_small_model().archive
    options = StackOptions(
        model_archive=model,
        workdir=args.workdir,
        parameters=dict(p.split("=", 1) for p in args.parameter),
        moto_port=args.moto_port,
        runtime_port=args.runtime_port,
        visibility_timeout_s=args.visibility_timeout,
    )
    with Stack(options) as stack:
        exports = " ".join(f"{k}={v}" for k, v in stack.user_environment().items())
        print(f"\nThe stack is up. In another shell:\n\n  export {exports}\n", flush=True)
        print(f"  {venv_command('aws')} s3 cp my-dog.jpg 's3://{stack.names.bucket}/incoming/my dog.jpg'")
        print(f"  {venv_command('python')} -m cli.query image 'incoming/my dog.jpg'")
        print(f"  {venv_command('python')} -m cli.query problems")
        print(f"  {venv_command('python')} -m cli.query review     # answers under the confidence threshold\n")
        print(f"Function and model logs: {stack.logs}/. Ctrl-C stops everything.", flush=True)
        print("READY", flush=True)
        try:
            while True:
                stack.check()
                time.sleep(0.5)
        except Stopped:
            pass  # the way to end it: the stack stops with the `with`
        except StackFailed as exc:
            print(f"\n{exc}", file=sys.stderr, flush=True)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
