//! Out of file descriptors (`ulimit -n 256`, 1000 clients): the gateway logs its accept
//! errors once a second, not once per attempt, keeps running, and serves again as soon as
//! descriptors are free.

mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::Message;
use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_kairos-gateway");

/// The gateway binary under `ulimit -n 256`, with its stderr lines on a channel.
struct Limited {
    child: Child,
    lines: mpsc::Receiver<String>,
    _config: tempfile_path::Temp,
}

impl Drop for Limited {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

mod tempfile_path {
    /// A file removed on drop.
    pub struct Temp(pub std::path::PathBuf);
    impl Drop for Temp {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

impl Limited {
    fn start(backend: SocketAddr) -> Limited {
        let path = std::env::temp_dir().join(format!("kairos-fd-{}.json", std::process::id()));
        let limits = r#""limits": { "handshake_timeout_ms": 60000 },"#;
        let json = config_json(backend, limits, "").replacen(
            "{ ",
            r#"{ "server": { "host": "127.0.0.1", "port": 0, "workers": 1 }, "#,
            1,
        );
        std::fs::write(&path, json).unwrap();
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(r#"ulimit -n 256 && exec "$0" --config "$1""#)
            .arg(BIN)
            .arg(&path)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the gateway under sh");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Limited {
            child,
            lines,
            _config: tempfile_path::Temp(path),
        }
    }

    /// The next stderr line containing `what`, within `limit`.
    fn wait_for(&self, what: &str, limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(what) => return Some(line),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }

    /// Stderr lines containing `what` during the next `window`.
    fn count_for(&self, what: &str, window: Duration) -> usize {
        let end = Instant::now() + window;
        let mut n = 0;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(what) => n += 1,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        n
    }
}

/// The test process itself holds 1000 client sockets: lift its own soft limit.
fn make_room_for_clients() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    let want = 4096.min(lim.maximum.unwrap_or(u64::MAX));
    if lim.current.is_some_and(|c| c < want) {
        let new = Rlimit {
            current: Some(want),
            maximum: lim.maximum,
        };
        setrlimit(Resource::Nofile, new).expect("raise the test's open files limit");
    }
    let now = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    assert!(
        now >= 1200,
        "this test needs ulimit -n >= 1200 for its clients, have {now}"
    );
}

#[test]
fn out_of_fds_logs_once_a_second_keeps_running_and_serves_again() {
    make_room_for_clients();
    let mut gw = Limited::start(start_echo());
    let addr: SocketAddr = gw
        .wait_for("listening on ", Duration::from_secs(20))
        .and_then(|l| l.split_once("listening on ")?.1.trim().parse().ok())
        .expect("gateway did not start");
    // 1000 clients that connect and say nothing: the gateway runs out of descriptors.
    let clients: Vec<TcpStream> = (0..1000)
        .map(|i| TcpStream::connect(addr).unwrap_or_else(|e| panic!("client {i}: {e}")))
        .collect();
    let first = gw.wait_for("accept failed", Duration::from_secs(10));
    assert!(
        first.is_some(),
        "no accept error logged with 1000 clients and 256 fds"
    );
    // Still out of descriptors for the next 3 s: about one line a second, not thousands.
    let lines = gw.count_for("accept failed", Duration::from_millis(3200));
    assert!(
        (2..=4).contains(&lines),
        "{lines} accept error lines in 3.2 s (want about one a second)"
    );
    assert!(gw.child.try_wait().unwrap().is_none(), "gateway exited");
    drop(clients);
    // Descriptors free up as the gateway sees those clients leave: it serves again.
    run(async {
        let start = Instant::now();
        let mut ws = loop {
            match within(Duration::from_secs(2), try_connect(addr, "/ws/chat", &[])).await {
                Some(Ok((ws, _))) => break ws,
                _ if start.elapsed() < Duration::from_secs(20) => continue,
                _ => panic!("gateway did not serve again within 20 s"),
            }
        };
        ws.send(Message::text("back")).await.unwrap();
        assert_eq!(next_data(&mut ws).await, Message::text("back"));
    });
    assert!(gw.child.try_wait().unwrap().is_none(), "gateway exited");
}
