//! Another process cannot open a folder this process holds, and can once it is released.
//! Kept in its own test binary: the child is forked from the test process, and until it execs
//! it shares every open file, the lock of stores opened by concurrently running tests included.

mod common;

use std::process::Command;

use common::*;
use sessionlog::SessionBackend;

#[test]
fn another_process_cannot_open_a_folder_this_one_holds() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append("k", &user("x")).unwrap();
    // `compact` opens the store to write: refused while this process holds it.
    let output = Command::new(env!("CARGO_BIN_EXE_sessionlog"))
        .arg("compact")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("locked"), "{stderr}");
    drop(store);
    let output = Command::new(env!("CARGO_BIN_EXE_sessionlog"))
        .arg("compact")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let output = Command::new(env!("CARGO_BIN_EXE_sessionlog"))
        .arg("ls")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains('k'));
}
