"""A stand-in model container speaking devstack's container protocol (one JSON line per request):
it answers /ping, echoes image bodies with 200, exits on the body b"crash" and never answers the
body b"hang". Counts its starts in starts.log of its model directory (its first argument)."""

from __future__ import annotations

import base64
import json
import sys
import time
from pathlib import Path


def main() -> None:
    with (Path(sys.argv[1]) / "starts.log").open("a") as starts:
        starts.write("started\n")
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("ping"):
            answer = {"status": 200}
        else:
            body = base64.b64decode(request["body_b64"])
            if body == b"crash":
                sys.exit(3)
            if body == b"hang":
                time.sleep(3600)
            answer = {"status": 200, "content_type": "application/json", "body": json.dumps({"echo": len(body)})}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
