//! What a forged token costs the gateway, per algorithm (issue 13, item 4): the verification
//! `JwtVerifier::verify` does on it, in this process and this build; and, with `--gateway
//! BIN`, the CPU the gateway process spends per refused handshake (401), read from
//! `/proc/PID/stat`. Used by `bench/jwt-cost.sh`, which makes the keys and compares builds.
//!
//! `cargo run --release --example jwt_cost -- KEYDIR [--gateway target/release/kairos-gateway]`
//!
//! KEYDIR holds `NAME.pem` (PKCS#8 private key) and `NAME.pub.pem` (SPKI public key) for NAME
//! in rsa2048, rsa4096, p256, p384, ed25519. A forged token is the header and claims of one
//! token and the signature of another made with the same key: well formed, so the whole
//! verification runs, and wrong. Prints a Markdown table on stdout.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use kairos_gateway::auth::JwtVerifier;
use kairos_gateway::config::{Jwt, KeySource};
use serde_json::json;

/// The HMAC secret of the HS256 case.
const SECRET: &str = "kairos-bench-secret-0123456789abcdef";

/// (label, `alg`, key file stem; `None`: the HMAC secret).
const CASES: [(&str, &str, Option<&str>); 6] = [
    ("HS256", "HS256", None),
    ("RS256, 2048 bits", "RS256", Some("rsa2048")),
    ("RS256, 4096 bits", "RS256", Some("rsa4096")),
    ("ES256 (P-256)", "ES256", Some("p256")),
    ("ES384 (P-384)", "ES384", Some("p384")),
    ("EdDSA (Ed25519)", "EdDSA", Some("ed25519")),
];

/// How long the gateway is flooded with one case's forged tokens.
const FLOOD: Duration = Duration::from_secs(2);

fn main() {
    let mut args = std::env::args().skip(1);
    let keys = PathBuf::from(args.next().expect("usage: jwt_cost KEYDIR [--gateway BIN]"));
    let gateway = match (args.next().as_deref(), args.next()) {
        (Some("--gateway"), Some(bin)) => Some(PathBuf::from(bin)),
        (None, _) => None,
        _ => panic!("usage: jwt_cost KEYDIR [--gateway BIN]"),
    };
    println!("| algorithm | verify a forged token (µs) | refused handshake, gateway CPU (µs) |");
    println!("|---|---|---|");
    if let Some(bin) = &gateway {
        let cost = refusal_cost(bin, &jwt_json("HS256", None, &keys), "");
        println!(
            "| (no token: the refusal alone) | - | {:.1} |",
            micros(cost)
        );
    }
    for (label, alg, stem) in CASES {
        let token = forged(alg, stem, &keys);
        let verifier = JwtVerifier::from_config(&settings(alg, stem, &keys)).expect("verifier");
        assert!(
            verifier.verify(&token).is_err(),
            "{label}: a forged token verified"
        );
        let verify = per_call(|| {
            let _ = verifier.verify(&token);
        });
        let refused = gateway.as_ref().map_or(String::from("-"), |bin| {
            let auth = format!("Authorization: Bearer {token}\r\n");
            format!(
                "{:.1}",
                micros(refusal_cost(bin, &jwt_json(alg, stem, &keys), &auth))
            )
        });
        println!("| {label} | {:.1} | {refused} |", micros(verify));
    }
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn key_path(keys: &Path, stem: &str, public: bool) -> PathBuf {
    let abs = std::fs::canonicalize(keys).expect("KEYDIR");
    abs.join(format!("{stem}{}.pem", if public { ".pub" } else { "" }))
}

/// The `jwt` block of the gateway for `alg`.
fn settings(alg: &str, stem: Option<&str>, keys: &Path) -> Jwt {
    let key = match stem {
        None => KeySource::Secret(SECRET.to_string()),
        Some(stem) => {
            let path = key_path(keys, stem, true);
            let pem = std::fs::read(&path).expect("public key");
            KeySource::PublicKeyPem {
                path: path.display().to_string(),
                pem,
            }
        }
    };
    Jwt {
        key,
        algorithms: vec![alg.to_string()],
        issuer: None,
        audience: None,
        required_claims: Vec::new(),
        leeway_seconds: 60,
        query_param: None,
        enforce_expiry: true,
        forward_claims: Vec::new(),
        strip_authorization: false,
    }
}

/// The same block as config JSON.
fn jwt_json(alg: &str, stem: Option<&str>, keys: &Path) -> String {
    match stem {
        None => json!({ "secret": SECRET, "algorithms": [alg] }).to_string(),
        Some(stem) => {
            let path = key_path(keys, stem, true);
            json!({ "public_key_file": path, "algorithms": [alg] }).to_string()
        }
    }
}

/// A forged token for `alg`: one token's header and claims, another's signature.
fn forged(alg: &str, stem: Option<&str>, keys: &Path) -> String {
    let algorithm: Algorithm = alg.parse().expect("algorithm");
    let key = match stem {
        None => EncodingKey::from_secret(SECRET.as_bytes()),
        Some(stem) => {
            let pem = std::fs::read(key_path(keys, stem, false)).expect("private key");
            match alg {
                "RS256" => EncodingKey::from_rsa_pem(&pem),
                "ES256" | "ES384" => EncodingKey::from_ec_pem(&pem),
                _ => EncodingKey::from_ed_pem(&pem),
            }
            .expect("private key PEM")
        }
    };
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + 3600;
    let sign = |sub: &str| {
        let claims = json!({ "sub": sub, "exp": exp });
        jsonwebtoken::encode(&Header::new(algorithm), &claims, &key).expect("sign")
    };
    let (wanted, other) = (sign("mallory"), sign("alice"));
    let body = wanted.rsplit_once('.').expect("JWS").0;
    let signature = other.rsplit_once('.').expect("JWS").1;
    format!("{body}.{signature}")
}

/// The CPU time one call of `f` takes on this thread: the best of 3 runs, each timing a batch
/// of calls that takes at least 0.3 s of CPU (the machine is shared: CPU time, not wall time,
/// and the best run).
fn per_call(mut f: impl FnMut()) -> Duration {
    (0..3)
        .map(|_| {
            let mut batch = 1u32;
            loop {
                let started = thread_cpu();
                for _ in 0..batch {
                    f();
                }
                let took = thread_cpu() - started;
                if took >= Duration::from_millis(300) {
                    return took / batch;
                }
                batch *= 2;
            }
        })
        .min()
        .unwrap_or_default()
}

/// This thread's CPU time so far (`/proc/thread-self/schedstat`: nanoseconds on a CPU).
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").expect("schedstat");
    let ns = stat.split_whitespace().next().and_then(|n| n.parse().ok());
    Duration::from_nanos(ns.expect("schedstat format"))
}

/// The gateway process's CPU per handshake refused with 401: a one-worker gateway with `jwt`,
/// one `auth_required` route, flooded for [`FLOOD`] from 4 threads by upgrades with `extra`
/// header lines.
fn refusal_cost(bin: &Path, jwt: &str, extra: &str) -> Duration {
    let (mut child, addr) = spawn(bin, jwt);
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    );
    let before = cpu_time(&child);
    let end = Instant::now() + FLOOD;
    let refused: u32 = std::thread::scope(|s| {
        let threads: Vec<_> = (0..4)
            .map(|_| s.spawn(|| flood(addr, request.as_bytes(), end)))
            .collect();
        threads.into_iter().map(|t| t.join().expect("client")).sum()
    });
    let cpu = cpu_time(&child) - before;
    let _ = child.kill();
    let _ = child.wait();
    cpu / refused.max(1)
}

/// Sends `request` on fresh connections until `end`, each answer 401; how many.
fn flood(addr: SocketAddr, request: &[u8], end: Instant) -> u32 {
    let mut n = 0;
    while Instant::now() < end {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.write_all(request).expect("write");
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        assert!(answer.starts_with(b"HTTP/1.1 401"), "not a 401");
        n += 1;
    }
    n
}

/// The gateway on `jwt`, one worker, 127.0.0.1:0; its address once it listens.
fn spawn(bin: &Path, jwt: &str) -> (Child, SocketAddr) {
    let config = std::env::temp_dir().join(format!("kairos-jwt-cost-{}.json", std::process::id()));
    let json = format!(
        r#"{{ "version": 1, "server": {{ "host": "127.0.0.1", "port": 0, "workers": 1 }},
              "jwt": {jwt}, "routers": [{{ "protocol": "websocket", "methods": ["GET"],
              "auth_required": true, "backends": [{{ "host": "ws://127.0.0.1", "port": 9 }}],
              "external_path": "/ws", "internal_path": "/ws" }}] }}"#
    );
    std::fs::write(&config, json).expect("write config");
    let mut child = Command::new(bin)
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the gateway");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let addr = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.split_once("listening on ")?.1.trim().parse().ok())
        .expect("the gateway did not start");
    // Keep draining its log so that it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (child, addr)
}

/// utime + stime of `child` (ticks of 10 ms).
fn cpu_time(child: &Child) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).expect("stat");
    let rest = stat.rsplit_once(')').expect("stat format").1;
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    Duration::from_millis((f[11] + f[12]) * 10)
}
