//! The built-in demo apps with real clients: the gRPC echo answered to Python's grpcio (the
//! message back with the instance's name; an unknown method is UNIMPLEMENTED).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

#[test]
fn the_grpc_echo_answers_a_real_grpc_client() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let _echo = Proc {
        child: Command::new(env!("CARGO_BIN_EXE_strait"))
            .args(["demo", "grpc-echo", "--listen", &addr, "--instance", "e1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
        what: "grpc-echo".into(),
    };
    wait_for(Duration::from_secs(10), "grpc-echo to listen", || {
        std::net::TcpStream::connect(&addr).ok()
    });
    let (ok, out, err) = run(python().to_str().unwrap(), &["-c", GRPC_ECHO_CALL, &addr]);
    assert!(ok, "{out}{err}");
    let mut lines = out.lines();
    // message "hi" (field 1), instance "e1" (field 2).
    assert_eq!(lines.next(), Some("0a02686912026531"));
    assert_eq!(lines.next(), Some("UNIMPLEMENTED"));
}
