//! End-to-end tests of the command line: the built binary run as a subprocess.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::Message;
use common::cli::{check, config_with_routes, gateway, output, Temp};
use common::{connect, next_data, run, start_echo};

/// A config with one route to `backend` and the given `server` block.
fn config_to(backend: SocketAddr, server: &str) -> String {
    format!(
        r#"{{ "version": 1, "server": {server}, "routers": [{{
            "protocol": "websocket", "external_path": "/ws/chat", "internal_path": "/ws",
            "methods": ["GET"], "backends": [{{ "host": "ws://127.0.0.1", "port": {} }}] }}] }}"#,
        backend.port()
    )
}

#[test]
fn version_prints_version() {
    for flag in ["--version", "-V"] {
        let (code, out, err) = output(gateway().arg(flag));
        assert_eq!(code, 0, "{flag}: {err}");
        assert_eq!(
            out,
            format!("kairos-gateway {}\n", env!("CARGO_PKG_VERSION"))
        );
    }
}

#[test]
fn help_exits_zero() {
    for flag in ["--help", "-h"] {
        let (code, out, _) = output(gateway().arg(flag));
        assert_eq!(code, 0, "{flag}");
        assert!(out.contains("USAGE:"), "{out}");
        assert!(out.contains("--check"), "{out}");
    }
}

#[test]
fn bad_arguments_exit_two() {
    let cases: &[(&[&str], &str)] = &[
        (&["--frobnicate"], "--frobnicate"),
        (&["extra-arg"], "extra-arg"),
        (&["--config"], "--config"),
    ];
    for (args, named) in cases {
        let (code, out, err) = output(gateway().args(*args));
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?}: {out}");
        assert!(err.contains(named), "{args:?}: {err}");
        assert!(err.contains("USAGE:"), "{args:?}: {err}");
    }
}

#[test]
fn check_valid_config_counts_websocket_routes() {
    for (n, want) in [(1, "config OK: 1 route\n"), (3, "config OK: 3 routes\n")] {
        let file = Temp::file("ok.json", &config_with_routes(n));
        let (code, out, err) = check(gateway().arg("--config").arg(&file.0));
        assert_eq!(code, 0, "{err}");
        assert_eq!(out, want);
        assert!(
            err.contains("router skipped"),
            "the http router is a warning: {err}"
        );
    }
}

#[test]
fn check_shipped_example() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.json");
    let (code, out, err) = check(gateway().arg("-c").arg(example));
    assert_eq!((code, out.as_str()), (0, "config OK: 1 route\n"), "{err}");
}

/// `config_with_routes(1)` with its websocket router changed by `edit`.
fn one_route_with(edit: (&str, &str)) -> String {
    let text = config_with_routes(1);
    assert!(text.contains(edit.0), "{text}");
    text.replacen(edit.0, edit.1, 1)
}

/// What a new user's typos used to give: a route served without its token check, or a
/// gateway that answers 404 to everything. Each is now an error naming the field and what was
/// meant, and nothing is served.
fn typo_cases() -> Vec<(&'static str, String, &'static str)> {
    vec![
        (
            "a misspelt auth_required",
            one_route_with((r#""methods""#, r#""auth_requried": true, "methods""#)),
            r#"routers[0] (/ws/0): auth_requried: unknown field; did you mean "auth_required"?"#,
        ),
        (
            "a misspelt protocol",
            one_route_with((r#""websocket""#, r#""websockets""#)),
            r#"routers[0] (/ws/0): protocol: "websockets" is not a known protocol; did you mean "websocket"?"#,
        ),
        (
            "no websocket route",
            config_with_routes(0),
            r#"routers: no websocket route (1 router(s), none with "protocol": "websocket"): every request would get 404"#,
        ),
    ]
}

#[test]
fn check_refuses_a_misspelt_field_or_protocol_naming_what_was_meant() {
    for (what, text, want) in typo_cases() {
        let file = Temp::file("typo.json", &text);
        let (code, out, err) = check(gateway().arg("--config").arg(&file.0));
        assert_eq!(code, 1, "{what}: {err}");
        assert!(out.is_empty(), "{what}: nothing on stdout: {out}");
        let line = format!("error: {}: {want}", file.0.display());
        assert!(
            err.lines().any(|l| l == line),
            "{what}: want {line:?} in:\n{err}"
        );
        assert!(err.contains("1 problem in the config"), "{what}: {err}");
    }
}

#[test]
fn start_refuses_a_misspelt_field_or_protocol() {
    for (what, text, want) in typo_cases() {
        let file = Temp::file("typo-run.json", &text);
        // Should it start after all, on a free port of the loopback.
        let mut cmd = gateway();
        cmd.env("KAIROS_HOST", "127.0.0.1").env("KAIROS_PORT", "0");
        let mut gw = Running::start(cmd.arg("--config").arg(&file.0));
        let status = gw.wait_exit(Duration::from_secs(20));
        let err = gw.rest_of_stderr().join("\n");
        assert_eq!(status, Some(1), "{what}: the gateway started:\n{err}");
        assert!(err.contains(want), "{what}: want {want:?} in:\n{err}");
        assert!(err.contains("nothing started"), "{what}: {err}");
    }
}

#[test]
fn check_invalid_config_prints_every_problem() {
    let text = r#"{ "version": 2, "limits": { "max_request_head_bytes": 10 }, "routers": [
        { "protocol": "websocket", "external_path": "/ws/chat", "internal_path": "/ws",
          "methods": ["POST"], "backends": [{ "host": "http://x", "port": 0 }] } ] }"#;
    let file = Temp::file("bad.json", text);
    let (code, out, err) = check(gateway().arg("--config").arg(&file.0));
    assert_eq!(code, 1, "{err}");
    assert!(out.is_empty(), "nothing on stdout: {out}");
    let shown = file.0.display();
    let want = [
        format!("error: {shown}: version: must be 1, found 2"),
        format!(
            "error: {shown}: limits.max_request_head_bytes: must be an integer from 256 to \
             1048576, found 10"
        ),
        format!(
            r#"error: {shown}: routers[0] (/ws/chat): methods: ["POST"] must contain "GET" (a WebSocket upgrade is a GET)"#
        ),
        format!(
            r#"error: {shown}: routers[0] (/ws/chat): backends[0].host: "http://x" must start with ws:// or wss://"#
        ),
        format!(
            "error: {shown}: routers[0] (/ws/chat): backends[0].port: must be an integer from 1 \
             to 65535, found 0"
        ),
    ];
    let lines: Vec<&str> = err.lines().collect();
    for w in &want {
        assert!(lines.contains(&w.as_str()), "missing {w:?} in:\n{err}");
    }
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("error: ")).count(),
        want.len(),
        "{err}"
    );
    assert!(
        err.contains("5 problems in the config; nothing started"),
        "{err}"
    );
}

#[test]
fn config_path_resolution_order() {
    let dir = Temp::dir();
    dir.put("config.json", &config_with_routes(1));
    let from_env = Temp::file("env.json", &config_with_routes(2));
    let from_flag = Temp::file("flag.json", &config_with_routes(3));
    let in_dir = || {
        let mut c = gateway();
        c.current_dir(&dir.0);
        c
    };
    let ok = |(code, out, err): (i32, String, String)| {
        assert_eq!(code, 0, "{err}");
        out
    };
    assert_eq!(
        ok(check(&mut in_dir())),
        "config OK: 1 route\n",
        "./config.json"
    );
    assert_eq!(
        ok(check(in_dir().env("KAIROS_CONFIG_PATH", &from_env.0))),
        "config OK: 2 routes\n",
        "env beats ./config.json"
    );
    assert_eq!(
        ok(check(
            in_dir()
                .env("KAIROS_CONFIG_PATH", &from_env.0)
                .arg("--config")
                .arg(&from_flag.0)
        )),
        "config OK: 3 routes\n",
        "--config beats env"
    );
    assert_eq!(
        ok(check(in_dir().arg("--config").arg(&from_flag.0))),
        "config OK: 3 routes\n",
        "--config beats ./config.json"
    );
    // An empty variable counts as unset (as KAIROS_HOST/KAIROS_PORT do).
    assert_eq!(
        ok(check(in_dir().env("KAIROS_CONFIG_PATH", ""))),
        "config OK: 1 route\n",
        "empty KAIROS_CONFIG_PATH"
    );
}

#[test]
fn unreadable_configs_exit_one_naming_the_file() {
    let dir = Temp::dir();
    let missing = dir.0.join("nope.json");
    let bad_json = dir.put("bad.json", "{\n  \"version\": 1,\n  \"routers\": [\n");
    let cases: Vec<(PathBuf, String)> = vec![
        (
            missing.clone(),
            format!("error: config file {} does not exist (", missing.display()),
        ),
        (
            dir.0.clone(),
            format!("error: config file {} is a directory (", dir.0.display()),
        ),
        (
            bad_json.clone(),
            format!(
                "error: {}: invalid JSON at line 4 column 0: ",
                bad_json.display()
            ),
        ),
    ];
    for (path, want) in &cases {
        // Through --config and through the environment.
        for by_env in [false, true] {
            let mut cmd = gateway();
            if by_env {
                cmd.env("KAIROS_CONFIG_PATH", path);
            } else {
                cmd.arg("--config").arg(path);
            }
            let (code, out, err) = check(&mut cmd);
            assert_eq!(code, 1, "{path:?}: {err}");
            assert!(out.is_empty(), "{path:?}: {out}");
            assert!(err.contains(want.as_str()), "want {want:?} in:\n{err}");
        }
    }
}

#[test]
fn bad_listen_env_is_a_config_error() {
    let file = Temp::file("ok.json", &config_with_routes(1));
    let (code, out, err) = check(
        gateway()
            .env("KAIROS_PORT", "99999")
            .arg("--config")
            .arg(&file.0),
    );
    assert_eq!(code, 1);
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains(r#"error: KAIROS_PORT: "99999" is not a port number (0-65535)"#),
        "{err}"
    );
}

/// A running gateway process, killed (and reaped) on drop even if the test fails.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Stderr lines read so far (for failure messages).
    seen: Vec<String>,
}

impl Running {
    fn start(cmd: &mut Command) -> Running {
        let mut child = cmd
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kairos-gateway");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, lines) = mpsc::channel();
        // Keeps draining stderr until the child exits, so logging never blocks it.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (with a deadline) for the `listening on ADDR` log line and returns ADDR.
    fn listen_addr(&mut self) -> SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some((_, addr)) = line.split_once("listening on ") {
                        return addr
                            .trim()
                            .parse()
                            .unwrap_or_else(|e| panic!("bad address in {line:?}: {e}"));
                    }
                    self.seen.push(line);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!(
                        "no `listening on` line within 20 s; stderr: {:#?}",
                        self.seen
                    )
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => panic!(
                    "gateway exited ({:?}) before listening; stderr: {:#?}",
                    self.child.try_wait(),
                    self.seen
                ),
            }
        }
    }
}

impl Running {
    /// The exit code once the process has exited (within `limit`); `None` while it runs.
    fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// Every stderr line not read yet (waits up to 5 s for the end of the output).
    fn rest_of_stderr(&mut self) -> Vec<String> {
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        self.seen.clone()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn echo_through(addr: SocketAddr) {
    run(async {
        let mut ws = connect(addr, "/ws/chat").await;
        ws.send(Message::text("hello via the binary"))
            .await
            .unwrap();
        assert_eq!(
            next_data(&mut ws).await,
            Message::text("hello via the binary")
        );
        ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
        assert_eq!(next_data(&mut ws).await, Message::binary(vec![1u8, 2, 3]));
    });
}

#[test]
fn binary_serves_websocket_echo() {
    let echo = start_echo();
    let file = Temp::file(
        "run.json",
        &config_to(echo, r#"{ "host": "127.0.0.1", "port": 0 }"#),
    );
    let mut gw = Running::start(gateway().arg("--config").arg(&file.0));
    let addr = gw.listen_addr();
    assert!(addr.ip().is_loopback(), "{addr}");
    assert_ne!(addr.port(), 0);
    echo_through(addr);
    assert!(
        gw.child.try_wait().unwrap().is_none(),
        "still running after serving"
    );
}

#[test]
fn listen_env_overrides_server_block() {
    let echo = start_echo();
    // An address this machine cannot bind: the gateway only starts if the env wins.
    let file = Temp::file(
        "env.json",
        &config_to(echo, r#"{ "host": "203.0.113.1", "port": 9 }"#),
    );
    let mut gw = Running::start(
        gateway()
            .env("KAIROS_HOST", "127.0.0.1")
            .env("KAIROS_PORT", "0")
            .arg("--config")
            .arg(&file.0),
    );
    let addr = gw.listen_addr();
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    assert_ne!(addr.port(), 0);
    echo_through(addr);
}

#[test]
fn demo_runs_the_echo_backend_on_the_first_backend_address() {
    // A port that was free a moment ago; --demo binds the echo backend there itself.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let backend: SocketAddr = ([127, 0, 0, 1], port).into();
    let file = Temp::file(
        "demo.json",
        &config_to(backend, r#"{ "host": "127.0.0.1", "port": 0 }"#),
    );
    let mut gw = Running::start(gateway().arg("--demo").arg("--config").arg(&file.0));
    let addr = gw.listen_addr();
    echo_through(addr);
    assert!(gw.child.try_wait().unwrap().is_none(), "still running");
}
