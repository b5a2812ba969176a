"""The worker process that measures cases, one JSON request and one JSON reply per line.

Cases run in a separate process so that a crash, a hang or a poisoned CUDA context ends only that process: the
runner records the case's status and starts a fresh worker. The protocol uses the process's original stdout; the
worker's own stdout is pointed at stderr first, so prints from any library cannot corrupt it.

The worker announces `{"ready": true}` once its imports are done, so no case's budget pays for them.
Requests: `{"op": "ceilings"}` -> the device's measured ceilings; `{"op": "device"}` -> the device this worker
sees (`environment.device_info`); `{"op": "case", "case": Case.to_dict(), "ceilings": {...}}` ->
`{"row": {...}, "fatal": bool}`; `{"op": "exit"}`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def main(argv: list[str] | None = None) -> int:
    """Serve requests from stdin until `exit`, the end of stdin, or a case that poisoned the process."""
    parser = argparse.ArgumentParser(prog="python -m attnbench.run.worker")
    parser.add_argument("--device", choices=["cpu", "cuda"], required=True)
    args = parser.parse_args(argv)

    _die_with_parent()
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())

    from attnbench.measure import memory
    from attnbench.measure.case import measure_case
    from attnbench.measure.ceilings import measure_ceilings
    from attnbench.suite.case import Case

    memory.warm_up(args.device)

    protocol.write(json.dumps({"ready": True, "pid": os.getpid()}) + "\n")
    for line in sys.stdin:
        request = json.loads(line)
        op = request["op"]
        if op == "exit":
            break
        if op == "ceilings":
            reply = measure_ceilings(args.device)
        elif op == "device":
            from attnbench.run.environment import device_info

            reply = device_info(args.device)
        elif op == "case":
            row, fatal = measure_case(Case.from_dict(request["case"]), args.device, request.get("ceilings"))
            reply = {"row": row, "fatal": fatal}
        else:
            reply = {"error": f"unknown op {op!r}"}
        protocol.write(json.dumps(reply, default=str) + "\n")
        if reply.get("fatal"):
            break
    return 0


def _die_with_parent() -> None:
    """On Linux, ask the kernel to kill this worker when the runner dies (even by SIGKILL), so that a hung case
    never outlives its run. Elsewhere the worker still exits when its stdin closes after the current case."""
    if not sys.platform.startswith("linux"):
        return
    import contextlib
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


if __name__ == "__main__":
    sys.exit(main())
