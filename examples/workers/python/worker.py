"""An example pool worker: `greet` jobs print a greeting to the log and complete."""

from conveyor_worker import run


def handle(task):
    if task.kind != "greet":
        task.fail("this worker does not know kind %r" % task.kind, retry=False)
        return
    name = (task.payload or {}).get("name")
    if not name:
        raise ValueError("payload has no name")  # fails the attempt; retried
    print("hello, %s (job %s, attempt %d)" % (name, task.id, task.attempt))


run(handle)
