"""Conveyor worker library for Python (protocol version 1, docs/worker-protocol.md).

A worker process started by a Conveyor pool reads one job at a time on stdin and answers on
stdout, one JSON object per line. Use it as a loop:

    from conveyor_worker import Consumer

    consumer = Consumer()
    while (task := consumer.wait_task()) is not None:
        if task.payload.get("ok"):
            task.complete()
        else:
            task.fail("not ok", retry=False)

or hand a function to run(): its return completes the job, an exception fails the attempt.
Standard library only. print() goes to stderr (Conveyor's log): stdout carries the protocol.
"""

import json
import sys

PROTOCOL = 1
_COMPLETE = b'{"type":"complete"}\n'


class Task:
    """One job: its fields, and exactly one of complete() or fail() to answer it."""

    def __init__(self, consumer, message):
        self._consumer = consumer
        self._answered = False
        self.id = message["id"]
        self.kind = message["kind"]
        self.queue = message["queue"]
        self.attempt = message["attempt"]
        self.max_attempts = message["max_attempts"]
        self.payload = message.get("payload")
        self.headers = message.get("headers") or {}
        self.deadline_ms = message.get("deadline_ms")

    def get_name(self):
        """The job's kind (RoadRunner's name for it)."""
        return self.kind

    def progress(self, value):
        """Stores any JSON value as the job's progress (shown by `conveyor job ID`)."""
        self._consumer._send({"type": "progress", "progress": value})

    def complete(self):
        """The job is done."""
        self._answer(_COMPLETE)

    def fail(self, error, retry=True, delay_ms=None):
        """The attempt failed: retried by the job's policy (after delay_ms if given), or
        dead-lettered at once when retry is False."""
        line = {"type": "fail", "error": str(error), "retry": bool(retry)}
        if delay_ms is not None:
            line["delay_ms"] = int(delay_ms)
        self._answer(line)

    def _answer(self, line):
        if self._answered:
            raise RuntimeError("job %s was already answered" % self.id)
        self._answered = True
        if isinstance(line, bytes):
            self._consumer._write(line)
        else:
            self._consumer._send(line)


class Consumer:
    """Announces the worker ready, then hands out jobs one at a time."""

    def __init__(self):
        # The protocol owns the real stdout; stray print() calls go to stderr instead of
        # corrupting it (Conveyor would kill a worker that writes non-protocol lines).
        # Bytes in and out: no text decoding layer on the hot path.
        self._out = sys.stdout.buffer
        sys.stdout = sys.stderr
        self._in = sys.stdin.buffer
        self._current = None
        self._send({"type": "ready", "protocol": PROTOCOL})

    def wait_task(self):
        """The next job, or None once Conveyor closed stdin (the worker should exit)."""
        if self._current is not None and not self._current._answered:
            self._current.fail("the worker asked for the next job without answering this one")
        while True:
            line = self._in.readline()
            if not line:
                return None
            if line.strip():
                break
        self._current = Task(self, json.loads(line))
        return self._current

    def _send(self, line):
        self._write(json.dumps(line, separators=(",", ":")).encode() + b"\n")

    def _write(self, data):
        self._out.write(data)
        self._out.flush()


def run(handler):
    """Runs handler(task) for every job: returning completes it (unless the handler answered
    itself), an exception fails the attempt with its message (retried by the job's policy)."""
    consumer = Consumer()
    while (task := consumer.wait_task()) is not None:
        try:
            handler(task)
        except Exception as error:  # any failure of the job's code is the attempt's failure
            if not task._answered:
                task.fail("%s: %s" % (type(error).__name__, error))
            continue
        if not task._answered:
            task.complete()
