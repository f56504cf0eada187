"""The pool tests' worker: does what each job's payload says (see tests/pool.rs)."""

import os
import signal
import sys
import time

sys.path.insert(0, os.environ["CONVEYOR_PY_LIB"])
from conveyor_worker import Consumer  # noqa: E402

hoard = []
log_dir = os.environ.get("WORKER_LOG_DIR")
log = open(os.path.join(log_dir, "%d.log" % os.getpid()), "a") if log_dir else None
consumer = Consumer()
while (task := consumer.wait_task()) is not None:
    p = task.payload or {}
    if log:
        log.write(task.id + "\n")
        log.flush()
    op = p.get("op", "ok")
    if op == "crash" and task.attempt == 1:
        print("about to crash on job", task.id)
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    elif op == "garbage" and task.attempt == 1:
        sys.__stdout__.write("this is not json\n")
        sys.__stdout__.flush()
    elif op == "hang" and task.attempt == 1:
        time.sleep(3600)
    elif op == "grow":
        hoard.append(bytearray(p["mb"] * 1024 * 1024))
        task.complete()
    elif op == "fail":
        task.fail(p.get("error", "failed"), retry=p.get("retry", True), delay_ms=p.get("delay_ms"))
    elif op == "progress":
        task.progress({"step": 1})
        task.complete()
    elif op == "affinity":
        cpus = ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))
        task.fail(cpus, retry=False)
    elif op == "sleep":
        time.sleep(p["ms"] / 1000)
        task.complete()
    else:
        task.complete()
