#!/bin/sh
# The exec tests' handler (see tests/exec.rs), written with examples/workers/shell/conveyor.sh.
. "$CONVEYOR_SH_LIB"
conveyor_read_payload
case "$(conveyor_get op)" in
    ok)
        [ "$CONVEYOR_JOB_KIND" = "sh" ] || conveyor_fail "no kind in the environment"
        [ "$CONVEYOR_JOB_ATTEMPT" = "1" ] || conveyor_fail "no attempt in the environment"
        printf '%s %s\n' "$CONVEYOR_JOB_ID" "$(conveyor_get name)" >> "$EXEC_OUT"
        ;;
    fail)
        conveyor_log "line one"
        conveyor_log "line two"
        conveyor_fail "cannot resize $(conveyor_get name)" 3
        ;;
    hang)
        sleep 300 &
        echo $! > "$EXEC_OUT.grandchild"
        sleep 300
        ;;
esac
