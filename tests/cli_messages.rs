//! What the binary says to someone trying it for the first time, each found wrong by one
//! (issue 14): counts that read right (`1 route`, `1 message`, `1 health check`), a missing
//! config file named by its full path with how to name another, `--demo` saying only what it
//! did, and a lone backend's failure not logged as one of three attempts.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use async_tungstenite::tungstenite::Message;
use common::cli::{check, config_with_routes, gateway, Temp};
use common::{config_json, connect, next_data, refused_status, run, GatewayProcess, STEP};

/// What the command line says after a missing file or a directory.
const HINT: &str = "give the path of a config file with --config PATH (or KAIROS_CONFIG_PATH)";

/// A port of 127.0.0.1 nothing listens on (it was free a moment ago).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// One route `/ws/chat` -> `/ws` on `backends` (JSON objects).
fn route_to(backends: &[String], route_extra: &str) -> String {
    format!(
        r#"{{ "version": 1, "routers": [{{ "protocol": "websocket", {route_extra}
              "external_path": "/ws/chat", "internal_path": "/ws", "methods": ["GET"],
              "backends": [{}] }}] }}"#,
        backends.join(", ")
    )
}

fn backend(host: &str, port: u16) -> String {
    format!(r#"{{ "host": "ws://{host}", "port": {port} }}"#)
}

#[test]
fn check_counts_routes_and_problems_in_the_singular_and_the_plural() {
    let one_problem = config_with_routes(1).replacen(r#""version": 1"#, r#""version": 2"#, 1);
    let two_problems = one_problem.replacen(r#""port": 3000"#, r#""port": 0"#, 1);
    let cases = [
        (config_with_routes(1), 0, "config OK: 1 route\n", ""),
        (config_with_routes(2), 0, "config OK: 2 routes\n", ""),
        (
            one_problem,
            1,
            "",
            "kairos-gateway: 1 problem in the config; nothing started",
        ),
        (
            two_problems,
            1,
            "",
            "kairos-gateway: 2 problems in the config; nothing started",
        ),
    ];
    for (text, want_code, want_out, want_err) in cases {
        let file = Temp::file("count.json", &text);
        let (code, out, err) = check(gateway().arg("--config").arg(&file.0));
        assert_eq!((code, out.as_str()), (want_code, want_out), "{err}");
        assert!(
            err.lines().any(|l| l == want_err) || want_err.is_empty(),
            "{err}"
        );
    }
}

#[test]
fn a_missing_config_file_is_named_by_its_full_path_with_how_to_name_another() {
    let dir = Temp::dir();
    // The child's working directory, as it will see it (with any symlink resolved).
    let cwd = dir.0.canonicalize().expect("canonical temp dir");
    let in_dir = || {
        let mut cmd = gateway();
        cmd.current_dir(&cwd);
        cmd
    };
    let default = "the default: config.json in the current directory";
    let cases = [
        (in_dir(), cwd.join("config.json"), default),
        (
            {
                let mut c = in_dir();
                c.args(["--config", "sub/nope.json"]);
                c
            },
            cwd.join("sub/nope.json"),
            "given with --config",
        ),
        (
            {
                let mut c = in_dir();
                c.env("KAIROS_CONFIG_PATH", "nope.json");
                c
            },
            cwd.join("nope.json"),
            "from KAIROS_CONFIG_PATH",
        ),
    ];
    for (mut cmd, tried, from) in cases {
        let (code, out, err) = check(&mut cmd);
        assert_eq!((code, out.as_str()), (1, ""), "{err}");
        assert!(tried.is_absolute());
        let want = format!(
            "error: config file {} does not exist ({from}); {HINT}",
            tried.display()
        );
        assert_eq!(err.lines().next(), Some(want.as_str()), "{err}");
        assert!(err.contains("nothing started"), "{err}");
    }
}

#[test]
fn a_directory_as_the_config_file_says_how_to_name_a_file() {
    let dir = Temp::dir();
    let (code, out, err) = check(gateway().arg("--config").arg(&dir.0));
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    let want = format!(
        "error: config file {} is a directory (given with --config); {HINT}",
        dir.0.display()
    );
    assert_eq!(err.lines().next(), Some(want.as_str()), "{err}");
}

#[test]
fn demo_starts_nothing_for_a_backend_that_is_not_on_this_machine() {
    let port = closed_port();
    let json = route_to(&[backend("192.0.2.1", port)], "");
    let mut gw = GatewayProcess::start_with_args(&json, "--demo");
    // The old binary said "demo echo backend started" here and served the echo on 127.0.0.1,
    // which the route never reaches.
    let line = gw
        .wait_for("--demo", Duration::from_secs(20))
        .expect("a line about --demo");
    let want = format!(
        "--demo: the echo backend was not started: route /ws/chat's first backend \
         ws://192.0.2.1:{port} is not a loopback address"
    );
    assert!(line.contains(&want), "{line}");
    let status = gw.wait_exit(Duration::from_secs(20));
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{line}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "something listens on the backend's port"
    );
}

#[test]
fn demo_says_where_it_started_the_echo_backend_and_which_backends_get_none() {
    let port = closed_port();
    let json = route_to(
        &[backend("localhost", port), backend("192.0.2.1", port)],
        "",
    );
    let gw = GatewayProcess::start_with_args(&json, "--demo");
    let started = gw
        .wait_for("echo backend started", Duration::from_secs(20))
        .expect("the echo backend started");
    let want = format!(
        "--demo: echo backend started on ws://127.0.0.1:{port}, for route /ws/chat's backend \
         ws://localhost:{port}"
    );
    assert!(started.contains(&want), "{started}");
    let none = gw
        .wait_for("no echo backend for", STEP)
        .expect("the backend it does not serve is named");
    assert!(
        none.contains(&format!("no echo backend for ws://192.0.2.1:{port} (")),
        "{none}"
    );
    gw.addr();
}

#[test]
fn a_lone_backend_that_fails_is_not_logged_as_one_of_three_attempts() {
    let port = closed_port();
    let gw = GatewayProcess::start(&config_json(([127, 0, 0, 1], port).into(), "", ""), None);
    let addr = gw.addr();
    let workers = gw.wait_for("worker thread", STEP).expect("worker line");
    assert!(workers.ends_with("] 1 worker thread"), "{workers}");
    assert_eq!(run(refused_status(addr, "/ws/chat", &[])), 502);
    let line = gw
        .wait_for("unreachable", STEP)
        .expect("the failure is logged");
    let url = format!("backend ws://127.0.0.1:{port}/ws unreachable: ");
    assert!(line.contains(&url), "{line}");
    assert!(line.ends_with("; no other backend to try"), "{line}");
    assert!(!line.contains("attempt"), "{line}");
}

#[test]
fn attempts_are_counted_out_of_the_backends_there_are() {
    let (a, b) = (closed_port(), closed_port());
    let json = route_to(
        &[backend("127.0.0.1", a), backend("127.0.0.1", b)],
        r#""circuit_breaker": { "failure_threshold": 1 }, "load_balancing_strategy": "random","#,
    );
    let gw = GatewayProcess::start(&json, None);
    let addr = gw.addr();
    assert_eq!(run(refused_status(addr, "/ws/chat", &[])), 502);
    let log = gw.stop_and_collect();
    let attempts: Vec<&String> = log.iter().filter(|l| l.contains(": attempt ")).collect();
    assert_eq!(attempts.len(), 2, "{log:#?}");
    assert!(attempts[0].contains(": attempt 1/2: backend "), "{log:#?}");
    assert!(
        attempts[0].ends_with("; trying the next backend"),
        "{log:#?}"
    );
    assert!(attempts[1].contains(": attempt 2/2: backend "), "{log:#?}");
    assert!(attempts[1].ends_with("; giving up"), "{log:#?}");
    let opened = log.iter().filter(|l| l.contains("circuit open after"));
    for line in opened.clone() {
        assert!(
            line.contains("circuit open after 1 failed connect in a row"),
            "{line}"
        );
    }
    assert_eq!(opened.count(), 2, "{log:#?}");
}

#[test]
fn a_backend_marked_down_after_one_check_reads_in_the_singular() {
    let port = closed_port();
    let json = route_to(
        &[backend("127.0.0.1", port)],
        r#""health_check": { "interval_ms": 50, "timeout_ms": 50, "unhealthy_threshold": 1,
                             "healthy_threshold": 1 },"#,
    );
    let gw = GatewayProcess::start(&json, None);
    gw.addr();
    let line = gw.wait_for(" is down: ", STEP).expect("marked down");
    assert!(
        line.contains(" is down: 1 health check in a row failed (last: "),
        "{line}"
    );
    assert!(
        line.ends_with("it gets no new connections until it passes 1 health check in a row"),
        "{line}"
    );
}

#[test]
fn a_closed_connection_counts_one_message_in_the_singular() {
    let echo = common::start_echo();
    let json = config_json(echo, "", "");
    let gw = GatewayProcess::start_with_log(&json, None, "kairos_gateway=debug");
    let addr: SocketAddr = gw.addr();
    run(async {
        let mut ws = connect(addr, "/ws/chat").await;
        ws.send(Message::text("one")).await.unwrap();
        assert_eq!(next_data(&mut ws).await, Message::text("one"));
        ws.close(None).await.unwrap();
        while let Some(Ok(_)) = futures_lite::StreamExt::next(&mut ws).await {}
    });
    let line = gw
        .wait_for(": closed; ", STEP)
        .expect("the close is logged");
    assert!(
        line.contains(": closed; 1 message to backend, 1 to client"),
        "{line}"
    );
}
