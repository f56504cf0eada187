#!/bin/sh
# An example exec handler: "makes" a thumbnail (logs what it would do).
. "$(dirname "$0")/conveyor.sh"
conveyor_read_payload
file=$(conveyor_get file)
width=$(conveyor_get width)
[ -n "$file" ] || conveyor_fail "payload has no file" 2
conveyor_log "thumbnail of $file at ${width:-256}px (job $CONVEYOR_JOB_ID, attempt $CONVEYOR_JOB_ATTEMPT)"
