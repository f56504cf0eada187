# Conveyor helpers for exec handlers written in POSIX sh. Source this file:
#
#   . "$(dirname "$0")/conveyor.sh"
#   conveyor_read_payload                  # the payload (JSON) in $CONVEYOR_PAYLOAD
#   name=$(conveyor_get name)              # a top-level string, number or boolean field
#   [ -n "$name" ] || conveyor_fail "payload has no name"
#
# An exec handler gets the payload on stdin and the job's fields in CONVEYOR_JOB_ID,
# CONVEYOR_JOB_KIND, CONVEYOR_JOB_QUEUE, CONVEYOR_JOB_ATTEMPT, CONVEYOR_JOB_MAX_ATTEMPTS and
# CONVEYOR_JOB_DEADLINE_MS. Exit status 0 completes the job; any other fails the attempt with
# the last lines written on stderr as its error (retried by the job's policy).

# Reads the whole payload from stdin into CONVEYOR_PAYLOAD (call once).
conveyor_read_payload() {
    CONVEYOR_PAYLOAD=$(cat)
}

# Prints the top-level field $1 of the payload: a string (without its quotes, escapes left as
# written), a number, true, false or null. Nested objects need a real JSON tool (jq, python3).
conveyor_get() {
    printf '%s' "$CONVEYOR_PAYLOAD" | tr '\n' ' ' |
        sed -n "s/.*\"$1\"[[:space:]]*:[[:space:]]*\(\"\([^\"\\\\]\|\\\\.\)*\"\|[-0-9.eE+]*\|true\|false\|null\).*/\1/p" |
        sed 's/^"\(.*\)"$/\1/'
}

# Fails the attempt: $1 on stderr (the job's error), exit status $2 (default 1).
conveyor_fail() {
    printf '%s\n' "$1" >&2
    exit "${2:-1}"
}

# Logs $* on stderr (Conveyor's log, with the job id).
conveyor_log() {
    printf '%s\n' "$*" >&2
}
