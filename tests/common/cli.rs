//! The gateway binary run as a subprocess for its command line: temp files, a clean
//! environment, and what one run printed. Used by `cli.rs` and `cli_messages.rs`.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

pub const BIN: &str = env!("CARGO_BIN_EXE_kairos-gateway");

/// A file or directory under the temp dir with a unique name (pid + counter), removed on drop.
pub struct Temp(pub PathBuf);

impl Temp {
    pub fn path(name: &str) -> PathBuf {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        std::env::temp_dir().join(format!("kairos-cli-{}-{n}-{name}", std::process::id()))
    }

    pub fn file(name: &str, contents: &str) -> Temp {
        let path = Temp::path(name);
        std::fs::write(&path, contents).unwrap();
        Temp(path)
    }

    pub fn dir() -> Temp {
        let path = Temp::path("dir");
        std::fs::create_dir(&path).unwrap();
        Temp(path)
    }

    /// Writes `name` inside this directory (removed with it).
    pub fn put(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, contents).unwrap();
        p
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        if self.0.is_dir() {
            let _ = std::fs::remove_dir_all(&self.0);
        } else {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// Removes from `cmd` the variables the gateway reads, so that none leaks from the
/// environment running the tests.
pub fn clean_env(cmd: &mut Command) -> &mut Command {
    for var in [
        "KAIROS_CONFIG_PATH",
        "KAIROS_HOST",
        "KAIROS_PORT",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// The binary with an environment that does not leak from the one running the tests.
pub fn gateway() -> Command {
    let mut cmd = Command::new(BIN);
    clean_env(&mut cmd).stdin(Stdio::null());
    cmd
}

pub fn output(cmd: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("run kairos-gateway");
    let code = status.code().expect("exited (not killed by a signal)");
    let s = |b: Vec<u8>| String::from_utf8(b).expect("UTF-8 output");
    (code, s(stdout), s(stderr))
}

/// `n` websocket routes `/ws/0`.. plus one `http` router, which is skipped and not counted.
pub fn config_with_routes(n: usize) -> String {
    let mut routers: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{ "protocol": "websocket", "external_path": "/ws/{i}", "internal_path": "/ws",
                     "methods": ["GET"], "backends": [{{ "host": "ws://localhost", "port": 3000 }}] }}"#
            )
        })
        .collect();
    routers.push(r#"{ "protocol": "http", "external_path": "/api" }"#.to_string());
    format!(r#"{{ "version": 1, "routers": [{}] }}"#, routers.join(","))
}

/// `cmd --check`: exit code, stdout, stderr.
pub fn check(cmd: &mut Command) -> (i32, String, String) {
    output(cmd.arg("--check"))
}
