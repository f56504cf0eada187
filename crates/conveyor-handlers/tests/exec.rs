//! The exec handler on a real worker runtime, with a handler written against the shell
//! library of `examples/workers/shell`: exit 0 completes, another status fails with stderr's
//! last lines, a timeout kills the whole process group (a grandchild too).

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use conveyor_core::{JobState, Registry};
use conveyor_handlers::{handlers, CommandSpec, Exec, ExecConfig, Runner, Spawn};
use serde_json::json;
use support::{worker_script, Harness};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_status_stderr_and_timeouts_make_the_outcome() {
    let h = Harness::new();
    let out = h.dir.path().join("exec.out");
    let lib =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/workers/shell/conveyor.sh");
    let command = CommandSpec::Words(vec![worker_script("exec_worker.sh").display().to_string()])
        .resolve(Path::new("."))
        .expect("script");
    let exec = Exec::new(ExecConfig {
        name: "sh".into(),
        command,
        spawn: Spawn {
            env: vec![
                ("CONVEYOR_SH_LIB".into(), lib.display().to_string()),
                ("EXEC_OUT".into(), out.display().to_string()),
            ],
            dir: None,
        },
        timeout: Duration::from_secs(1),
    });
    let mut registry = Registry::new();
    for handler in handlers(Arc::new(exec) as Arc<dyn Runner>, &["sh".to_string()]) {
        registry.register(handler);
    }
    let run = h.start(registry, 4);
    let ok = h.enqueue("sh", json!({"op": "ok", "name": "ada"}), 1).await;
    let fail = h
        .enqueue("sh", json!({"op": "fail", "name": "cat.png"}), 2)
        .await;
    let hang = h.enqueue("sh", json!({"op": "hang"}), 1).await;
    let infos = h.wait_final(&[ok, fail, hang]).await;
    run.stop().await;

    assert_eq!(infos[0].state, JobState::Completed);
    let written = std::fs::read_to_string(&out).expect("the ok job ran");
    assert_eq!(written, format!("{ok} ada\n"));

    assert_eq!((infos[1].state, infos[1].attempt), (JobState::Dead, 2));
    assert_eq!(
        infos[1].last_error.as_deref(),
        Some("exit status 3: line one\nline two\ncannot resize cat.png")
    );

    assert_eq!(infos[2].state, JobState::Dead);
    let error = infos[2].last_error.clone().unwrap_or_default();
    assert!(
        error.starts_with("timed out after 1s: process group killed"),
        "{error}"
    );
    let grandchild =
        std::fs::read_to_string(format!("{}.grandchild", out.display())).expect("grandchild pid");
    let pid = grandchild.trim();
    // The group kill reached the grandchild: it is gone (or a zombie awaiting its reaper).
    let mut state = String::new();
    for _ in 0..100 {
        state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if state.is_empty() || state.contains(") Z") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("grandchild {pid} still runs: {state}");
}
