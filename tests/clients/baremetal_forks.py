"""Runs the real `baremetal` CLI (python-ironicclient's `ironicclient.shell.main`, what the
installed `baremetal` script calls) many times without paying Python's start-up and the
client's imports each time: the modules are imported once here, and every command runs in a
forked child, so each one is still a fresh process with its own state.

Protocol, one JSON object per line: in {"argv": [...], "env": {...}}; out {"code": int,
"stdout": str, "stderr": str}. Ends at EOF on stdin.
"""

import io
import json
import os
import sys

from ironicclient.shell import main


def run_child(argv, env, write_fd):
    os.environ.update(env)
    sys.argv = ["baremetal"] + argv
    # A command never reads stdin (the server's requests); without arguments cliff would.
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    sys.stdin = open(0, closefd=False)
    out, err = io.StringIO(), io.StringIO()
    sys.stdout, sys.stderr = out, err
    try:
        # `main`'s default argv was bound when this server imported it: pass it explicitly.
        code = main(argv)
    except SystemExit as e:
        code = e.code
    except BaseException as e:  # what the script would print before dying
        err.write(f"{type(e).__name__}: {e}\n")
        code = 1
    if code is None:
        code = 0
    elif not isinstance(code, int):
        err.write(f"{code}\n")
        code = 1
    data = json.dumps({"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()})
    with os.fdopen(write_fd, "w") as w:
        w.write(data)
    os._exit(0)


def serve():
    for line in sys.stdin:
        req = json.loads(line)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            try:
                run_child(req["argv"], req.get("env", {}), w)
            finally:
                os._exit(70)
        os.close(w)
        with os.fdopen(r) as reader:
            data = reader.read()
        _, status = os.waitpid(pid, 0)
        if not data:
            data = json.dumps(
                {"code": 70, "stdout": "", "stderr": f"the child died (wait status {status})"}
            )
        sys.stdout.write(data + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    serve()
