//! Bad config input through the real binary (`--check`): every problem of one file printed,
//! key and CA files that are wrong, huge or endless files, contents that are not a config.
//! Each must exit 1, name the file or field and the problem, and never hang or crash.
//!
//! Already covered in `tests/cli.rs` and not repeated here: a missing file, a directory as the
//! config path and invalid JSON with its line and column
//! (`unreadable_configs_exit_one_naming_the_file`), five problems of one file
//! (`check_invalid_config_prints_every_problem`).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The command-line harness (only its environment cleaning and `BIN` are used here).
#[allow(dead_code)]
#[path = "common/cli.rs"]
mod cli;

use cli::BIN;

/// The longest a `--check` may take, whatever the input.
const DEADLINE: Duration = Duration::from_secs(20);

/// The size cap of `src/config` (`MAX_CONFIG_BYTES`), as the messages state it.
const CAP: u64 = 4 * 1024 * 1024;

/// A fresh directory under the temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("kairos-config-errors-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn put(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, contents).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg_attr(not(feature = "jwt-asymmetric"), allow(dead_code))]
fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// What one run printed.
#[derive(Debug)]
struct Run {
    code: i32,
    out: String,
    err: String,
}

/// Runs `kairos-gateway --check --config PATH` (through `wrap`, e.g. a shell that lowers a
/// limit, when given) and waits for it with [`DEADLINE`]; kills it and fails if it hangs.
fn check_with(wrap: &[&str], config: &Path) -> Run {
    let mut cmd = Command::new(wrap.first().copied().unwrap_or(BIN));
    cmd.args(wrap.iter().skip(1));
    if !wrap.is_empty() {
        cmd.arg(BIN);
    }
    cmd.arg("--check").arg("--config").arg(config);
    cli::clean_env(&mut cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kairos-gateway");
    // Read both pipes on threads so that a chatty child never blocks on a full pipe.
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            r.read_to_string(&mut s).expect("UTF-8 output");
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "--check on {} still running after {DEADLINE:?}",
                config.display()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let code = status
        .code()
        .unwrap_or_else(|| panic!("killed by a signal: {status:?}"));
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    Run { code, out, err }
}

fn check(config: &Path) -> Run {
    check_with(&[], config)
}

/// Asserts a failed check whose stderr has exactly `want` as its problem lines.
fn assert_problems(run: &Run, want: &[String]) {
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.out.is_empty(), "nothing on stdout: {run:#?}");
    let lines: Vec<&str> = run
        .err
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    for w in want {
        assert!(
            lines.contains(&w.as_str()),
            "missing {w:?} in:\n{}",
            run.err
        );
    }
    assert_eq!(lines.len(), want.len(), "{}", run.err);
    let total = format!(
        "kairos-gateway: {} problem{} in the config; nothing started",
        want.len(),
        if want.len() == 1 { "" } else { "s" }
    );
    assert!(run.err.contains(&total), "{}", run.err);
}

/// Asserts a failed check with one problem line that starts with `prefix` and contains
/// `detail`.
fn assert_one_problem(run: &Run, prefix: &str, detail: &str) {
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.out.is_empty(), "nothing on stdout: {run:#?}");
    let lines: Vec<&str> = run
        .err
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(lines.len(), 1, "{}", run.err);
    assert!(
        lines[0].starts_with(prefix),
        "want {prefix:?}...\n got {}",
        lines[0]
    );
    assert!(lines[0].contains(detail), "want {detail:?} in {}", lines[0]);
}

/// A valid config with one route and `extra` top-level members (with a trailing comma).
fn config(extra: &str) -> String {
    format!(
        r#"{{ {extra} "version": 1, "routers": [{{ "protocol": "websocket",
            "external_path": "/ws/chat", "internal_path": "/ws", "methods": ["GET"],
            "backends": [{{ "host": "ws://127.0.0.1", "port": 3000 }}] }}] }}"#
    )
}

#[test]
#[cfg(full)]
fn every_problem_is_printed_including_key_and_ca_files() {
    let dir = TempDir::new();
    dir.put("not-a-key.pem", "hello, I am not a key\n");
    let file = dir.put(
        "multi.json",
        r#"{ "version": 1,
  "server": { "workers": 0, "port": 70000 },
  "jwt": { "public_key_file": "not-a-key.pem", "algorithms": ["RS256"] },
  "tls": { "ca_file": "missing-ca.pem" },
  "routers": [
    { "protocol": "websocket", "external_path": "ws/chat", "internal_path": "/ws",
      "methods": ["GET"], "auth_required": true,
      "backends": [{ "host": "ws://x", "port": 80, "weight": 0 }] },
    { "protocol": "websocket", "external_path": "/b", "internal_path": "/ws",
      "methods": ["GET"], "backends": [] } ] }"#,
    );
    let run = check(&file);
    let (f, d) = (file.display(), dir.0.display());
    let key = dir.0.join("not-a-key.pem");
    let ca_line = run
        .err
        .lines()
        .find(|l| l.starts_with(&format!("error: {f}: tls.ca_file: {d}/missing-ca.pem: ")))
        .unwrap_or_else(|| panic!("no tls.ca_file line in:\n{}", run.err));
    assert!(ca_line.contains("No such file"), "{ca_line}");
    let want: Vec<String> = [
        "server.port: must be an integer from 0 to 65535, found 70000".to_string(),
        "server.workers: must be an integer from 1 to 1024, found 0".to_string(),
        format!(
            "jwt.public_key_file: {}: not an RSA public key in PEM format (no -----BEGIN ...----- block)",
            key.display()
        ),
        r#"routers[0] (ws/chat): external_path: "ws/chat" must start with /"#.to_string(),
        "routers[0] (ws/chat): auth_required: is true but there is no valid jwt block".to_string(),
        "routers[0] (ws/chat): backends[0].weight: must be an integer from 1 to 1000000, found 0"
            .to_string(),
        "routers[1] (/b): backends: must list at least one backend".to_string(),
    ]
    .iter()
    .map(|p| format!("error: {f}: {p}"))
    .chain([ca_line.to_string()])
    .collect();
    assert_problems(&run, &want);
}

#[test]
#[cfg(feature = "jwt-asymmetric")]
fn jwt_public_key_file_that_is_not_a_usable_public_key() {
    let dir = TempDir::new();
    let garbage = dir.put("garbage.pem", "-----BEGIN PUBLIC KEY-----\nnot base64!\n");
    let cases: Vec<(PathBuf, &str, String)> = vec![
        (
            garbage.clone(),
            "RS256",
            "not an RSA public key in PEM format".into(),
        ),
        (
            garbage,
            "EdDSA",
            "not an Ed25519 public key in PEM format".into(),
        ),
        (
            fixture("ec_public.pem"),
            "RS256",
            "not an RSA public key in PEM format".into(),
        ),
        (
            fixture("rsa_public.pem"),
            "ES256",
            "not an EC public key in PEM format".into(),
        ),
        (fixture("ec_private.pem"), "ES256", "private key".into()),
        // jsonwebtoken takes an RSA private key as an RSA key; every token then fails its
        // signature check, so `--check` must refuse it.
        (fixture("rsa_private.pem"), "RS256", "private key".into()),
        (dir.0.clone(), "RS256", "Is a directory".into()),
    ];
    for (key, alg, problem) in &cases {
        let jwt = format!(
            r#""jwt": {{ "public_key_file": {:?}, "algorithms": [{alg:?}] }},"#,
            key.display().to_string()
        );
        let file = dir.put("jwt.json", config(&jwt));
        let run = check(&file);
        let prefix = format!("error: {}: jwt.public_key_file", file.display());
        assert_one_problem(&run, &prefix, &key.display().to_string());
        assert_one_problem(&run, &prefix, problem);
    }
}

#[test]
#[cfg(feature = "tls-backend")]
fn tls_ca_file_missing_or_not_a_certificate() {
    let dir = TempDir::new();
    let missing = dir.0.join("no-such-ca.pem");
    let cases: [(&Path, &str); 3] = [
        (&missing, "No such file or directory"),
        (&dir.0, "Is a directory"),
        (&fixture("rsa_public.pem"), "no PEM certificate in it"),
    ];
    for (ca, problem) in cases {
        let tls = format!(r#""tls": {{ "ca_file": {:?} }},"#, ca.display().to_string());
        let file = dir.put("tls.json", config(&tls));
        let run = check(&file);
        let prefix = format!("error: {}: tls.ca_file: {}: ", file.display(), ca.display());
        assert_one_problem(&run, &prefix, problem);
    }
}

#[test]
fn huge_config_file_is_refused_without_reading_it() {
    let dir = TempDir::new();
    let file = dir.put("huge.json", vec![b' '; 50 << 20]);
    let t = Instant::now();
    let run = check(&file);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let want = format!(
        "error: config file {} is {} bytes: larger than the {CAP} bytes allowed",
        file.display(),
        50 << 20
    );
    assert_problems(&run, &[want]);
}

/// A device (or pipe) has no size to check beforehand: the read itself must stop at the cap.
/// The shell's `ulimit -v` only keeps a failing gateway from eating the machine's memory.
#[cfg(target_os = "linux")]
#[test]
fn endless_config_file_is_read_only_up_to_the_cap() {
    let t = Instant::now();
    let run = check_with(
        &["sh", "-c", r#"ulimit -v 4000000 && exec "$@""#, "sh"],
        Path::new("/dev/zero"),
    );
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let want = format!("error: config file /dev/zero is larger than the {CAP} bytes allowed");
    assert_problems(&run, &[want]);
}

#[test]
fn big_config_under_the_cap_parses_cleanly() {
    let dir = TempDir::new();
    // A valid config carrying a big router of another Kairos protocol (skipped unchecked):
    // about 3.9 MiB, a few 100 000 values.
    let padding = vec!["[0,1]"; 650_000].join(",");
    let http = format!(r#"{{ "protocol": "http", "padding": [{padding}] }}"#);
    let text = config("").replacen(r#""routers": ["#, &format!(r#""routers": [{http}, "#), 1);
    assert!((text.len() as u64) < CAP, "{}", text.len());
    let file = dir.put("big.json", &text);
    let run = check(&file);
    assert_eq!(
        (run.code, run.out.as_str()),
        (0, "config OK: 1 route\n"),
        "{run:#?}"
    );
    assert!(run.err.contains("router skipped"), "{}", run.err);
}

#[test]
fn contents_that_are_not_a_config_name_the_problem() {
    let dir = TempDir::new();
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let cases: [(&str, &[u8], &str); 5] = [
        (
            "deep.json",
            deep.as_bytes(),
            "invalid JSON at line 1 column 128: recursion limit",
        ),
        (
            "latin1.json",
            b"{ \"version\": 1, \"x\": \"caf\xe9\" }",
            "stream did not contain valid UTF-8",
        ),
        (
            "empty.json",
            b"",
            "invalid JSON at line 1 column 0: EOF while parsing",
        ),
        (
            "array.json",
            b"[]",
            "the config: must be a JSON object, found an array",
        ),
        (
            "trailing.json",
            b"{ \"version\": 1, \"routers\": [] }\n}",
            "invalid JSON at line 2 column 1: trailing",
        ),
    ];
    for (name, contents, problem) in cases {
        let file = dir.put(name, contents);
        let run = check(&file);
        let shown = file.display();
        let prefix = if problem.starts_with("stream") {
            format!("error: config file {shown}: ")
        } else {
            format!("error: {shown}: ")
        };
        assert_one_problem(&run, &format!("{prefix}{problem}"), "");
    }
}

#[test]
fn a_config_wrong_in_many_places_prints_the_first_fifty_problems() {
    let dir = TempDir::new();
    let routers = vec!["1"; 500].join(",");
    let file = dir.put(
        "many.json",
        format!(r#"{{ "version": 1, "routers": [{routers}] }}"#),
    );
    let run = check(&file);
    assert_eq!(run.code, 1);
    let lines: Vec<&str> = run
        .err
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(lines.len(), 51, "stderr: {}", run.err);
    assert_eq!(lines[50], "error: ... and 450 more");
    assert!(run.err.contains("500 problems"), "stderr: {}", run.err);
}
