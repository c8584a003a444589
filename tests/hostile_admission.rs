//! Hostile load on admission (issue 13): a client over its per-address handshake rate costs no
//! signature check, and one host (one IPv6 /64, or many prefixes) cannot lock strangers out of
//! a route's per-address table, while a victim on the same one-worker gateway keeps its
//! service.
// Helpers of the tests a build without every feature leaves out.
#![cfg_attr(not(full), allow(dead_code, unused_imports))]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

/// How long each attack runs.
const ATTACK: Duration = Duration::from_secs(3);

/// The gateway process's CPU time so far (user + system, all threads), from `/proc/PID/stat`
/// in clock ticks of 10 ms (`USER_HZ` is 100 on Linux).
fn cpu_time(gw: &GatewayProcess) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", gw.child.id()))
        .expect("read /proc/PID/stat");
    // Fields after the command name (which may hold spaces): state is the 3rd field, utime
    // and stime the 14th and 15th.
    let rest = stat.rsplit_once(')').expect("stat format").1;
    let fields: Vec<u64> = rest
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    Duration::from_millis((fields[10] + fields[11]) * 10)
}

/// The answer's status of one upgrade request (`request`, a whole head) on a fresh socket,
/// read until the gateway closes; 101 answers are closed at once. `None` when the gateway did
/// not answer within [`STEP`].
fn handshake_status(addr: SocketAddr, request: &[u8]) -> Option<u16> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(STEP)).ok()?;
    s.write_all(request).ok()?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let status = parse_raw(&head).status;
    if status != 101 {
        // Read to the gateway's close, as a client does, so that its drain ends at once.
        let _ = s.read_to_end(&mut head);
    }
    (status != 0).then_some(status)
}

/// Sends `request` again and again from `threads` threads for [`ATTACK`]; the statuses.
fn flood(addr: SocketAddr, threads: usize, request: impl Fn(u64) -> String + Sync) -> Vec<u16> {
    let end = Instant::now() + ATTACK;
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let request = &request;
                s.spawn(move || {
                    let mut got = Vec::new();
                    let mut n = t as u64;
                    while Instant::now() < end {
                        got.push(handshake_status(addr, request(n).as_bytes()).unwrap_or(0));
                        n += threads as u64;
                    }
                    got
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("attacker thread"))
            .collect()
    })
}

/// How many of `statuses` are `status`.
fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|&&s| s == status).count()
}

/// The path of `tests/fixtures/{name}`.
fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A config with the ES256 key of `tests/fixtures/` and two routes to `echo`: `/ws/chat` (open,
/// no limits: the victim's) and `/ws/auth` (a token needed, `handshakes_per_second_per_ip: 1`).
fn es256_config(echo: SocketAddr) -> String {
    let route = |path: &str, extra: &str| router(echo, path, "/ws", extra);
    let limited = r#""auth_required": true,
        "rate_limit": { "handshakes_per_second_per_ip": 1 },"#;
    // An absolute path: the process reads its config from a temporary directory.
    let key = fixture("ec_public.pem");
    format!(
        r#"{{ "version": 1,
              "jwt": {{ "public_key_file": "{}", "algorithms": ["ES256"] }},
              "routers": [ {}, {} ] }}"#,
        key.display(),
        route("/ws/chat", ""),
        route("/ws/auth", limited)
    )
}

/// A forged ES256 token: the header and claims of one token signed with the fixture key, the
/// signature of another (well formed, so the whole verification runs, and wrong).
fn forged_es256() -> String {
    let pem = std::fs::read(fixture("ec_private.pem")).expect("read the EC fixture");
    let key = EncodingKey::from_ec_pem(&pem).expect("EC key");
    let sign = |sub: &str| {
        let claims = json!({ "sub": sub, "exp": unix_now() + 3600 });
        jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &key).expect("sign")
    };
    let (wanted, other) = (sign("mallory"), sign("alice"));
    let body = wanted.rsplit_once('.').expect("a JWS").0;
    let signature = other.rsplit_once('.').expect("a JWS").1;
    format!("{body}.{signature}")
}

/// The least time one verification of `token` takes in this build, as the gateway would do it
/// with `config_json`'s `jwt` block (the least of 20 runs: the machine is shared).
fn check_cost(config_json: &str, token: &str) -> Duration {
    let loaded = kairos_gateway::config::parse(config_json, Path::new(env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("{e}"));
    let settings = loaded.config.jwt.expect("a jwt block");
    let jwt = kairos_gateway::auth::JwtVerifier::from_config(&settings)
        .unwrap_or_else(|e| panic!("{e:?}"));
    (0..20)
        .map(|_| {
            let started = Instant::now();
            assert!(
                jwt.verify(token).is_err(),
                "the forged token must not verify"
            );
            started.elapsed()
        })
        .min()
        .unwrap_or_default()
}

#[test]
#[cfg(full)]
fn forged_tokens_over_the_handshake_rate_cost_no_signature_check() {
    let json = es256_config(start_echo());
    let token = forged_es256();
    let check = check_cost(&json, &token);
    let gw = GatewayProcess::start(&json, None);
    let addr = gw.addr();
    let victim = Victim::start(addr, "/ws/chat", Duration::from_millis(10));
    let request = upgrade_request("/ws/auth", &format!("Authorization: Bearer {token}\r\n"));
    let cpu_before = cpu_time(&gw);
    let statuses = std::thread::scope(|s| {
        let attack = s.spawn(|| flood(addr, 4, |_| request.clone()));
        while !attack.is_finished() {
            assert_new_client_served(addr, "/ws/chat");
            std::thread::sleep(Duration::from_millis(200));
        }
        attack.join().expect("attack")
    });
    let cpu = cpu_time(&gw) - cpu_before;
    let report = victim.assert_served(100);
    let (refused_401, refused_429) = (count(&statuses, 401), count(&statuses, 429));
    eprintln!(
        "{} forged tokens: {refused_401} x 401, {refused_429} x 429; gateway CPU {cpu:?}; \
         one check {check:?}; victim {report:?}",
        statuses.len()
    );
    assert_eq!(
        refused_401 + refused_429,
        statuses.len(),
        "every forged token is refused with 401 or 429: {statuses:?}"
    );
    // One token at start, one a second: at most 1 + 3 (and one of slack) are checked.
    let checked_at_most = 1 + ATTACK.as_secs() as usize + 1;
    assert!(
        refused_401 <= checked_at_most,
        "{refused_401} forged tokens were checked; the rate allows {checked_at_most}"
    );
    let all_checked = check * statuses.len() as u32;
    assert!(
        cpu < all_checked / 4,
        "the gateway spent {cpu:?} on {} forged tokens; checking each would cost {all_checked:?}",
        statuses.len()
    );
}

#[test]
fn a_refused_token_gives_back_every_place_it_took() {
    let secret = "kairos-test-secret-0123456789abcdef";
    let route = r#""auth_required": true, "max_connections": 1,
        "rate_limit": { "connections_per_ip": 1 },"#;
    let top =
        format!(r#""jwt": {{ "secret": "{secret}" }}, "limits": {{ "max_connections": 1 }},"#);
    let gw = start_gateway(&config_json(start_echo(), &top, route));
    let good = hs256_token(secret, &json!({ "sub": "alice", "exp": unix_now() + 3600 }));
    let bad = hs256_token(
        "another secret",
        &json!({ "sub": "mallory", "exp": unix_now() + 3600 }),
    );
    let with = |token: &str| format!("Authorization: Bearer {token}\r\n");
    run(async {
        // Each refused token held the route's, the gateway's and its address's one place for a
        // moment: all are back, so the good token gets in.
        for _ in 0..3 {
            let r = raw_http(gw, upgrade_request("/ws/chat", &with(&bad)).as_bytes()).await;
            assert_eq!(r.status, 401, "{}", r.body);
        }
        let auth = format!("Bearer {good}");
        let (_held, _) = try_connect(gw, "/ws/chat", &[("Authorization", &auth)])
            .await
            .expect("a good token after refused ones");
        // Over its own limit, a client is told so before its token is looked at.
        let r = raw_http(gw, upgrade_request("/ws/chat", &with(&bad)).as_bytes()).await;
        assert_eq!(r.status, 429, "{}", r.body);
    });
}

/// A one-worker gateway process behind a trusted proxy (127.0.0.1: the tests' clients name
/// themselves in `X-Forwarded-For`) with two routes to one echo backend: `/ws/chat` (open, no
/// limits: the victim's) and `/ws/limited` with `rate_limit`.
fn proxied_gateway(rate_limit: &str) -> GatewayProcess {
    let echo = start_echo();
    let route = |path: &str, extra: &str| router(echo, path, "/ws", extra);
    let limited = format!(r#""rate_limit": {rate_limit},"#);
    let json = format!(
        r#"{{ "version": 1, "server": {{ "trusted_proxies": ["127.0.0.1"] }},
              "routers": [ {}, {} ] }}"#,
        route("/ws/chat", ""),
        route("/ws/limited", &limited)
    );
    GatewayProcess::start(&json, None)
}

/// An upgrade of `/ws/limited` on behalf of `client`.
fn from(client: &str) -> String {
    upgrade_request("/ws/limited", &format!("X-Forwarded-For: {client}\r\n"))
}

/// A client outside every attacking prefix gets its 101 on `/ws/limited` within the victim's
/// limit, and a new client on `/ws/chat` too.
fn assert_stranger_served(addr: SocketAddr, stranger: &str) {
    let started = Instant::now();
    let status = handshake_status(addr, from(stranger).as_bytes());
    let took = started.elapsed();
    assert_eq!(
        status,
        Some(101),
        "stranger {stranger} was refused after {took:?}"
    );
    assert!(took < VICTIM_CONNECT, "stranger {stranger} waited {took:?}");
    assert_new_client_served(addr, "/ws/chat");
}

#[test]
fn a_flood_from_one_ipv6_prefix_counts_as_one_client_and_strangers_keep_their_101() {
    let gw = proxied_gateway(r#"{ "handshakes_per_second_per_ip": { "rate": 1, "burst": 5 } }"#);
    let addr = gw.addr();
    let victim = Victim::start(addr, "/ws/chat", Duration::from_millis(10));
    // Every source address of one /64, a new one each time.
    let attacker = |n: u64| from(&format!("2001:db8:a:b:{:x}:{:x}::1", n >> 16, n & 0xffff));
    let statuses = std::thread::scope(|s| {
        let attack = s.spawn(|| flood(addr, 2, attacker));
        let mut i = 0;
        while !attack.is_finished() {
            i += 1;
            // Each stranger from a /64 of its own (the next one, then others).
            assert_stranger_served(addr, &format!("2001:db8:a:{:x}::1", 0xb + i));
            assert_stranger_served(addr, &format!("198.51.100.{}", i % 250 + 1));
            std::thread::sleep(Duration::from_millis(100));
        }
        attack.join().expect("attack")
    });
    let report = victim.assert_served(100);
    let (upgraded, refused) = (count(&statuses, 101), count(&statuses, 429));
    eprintln!(
        "{} handshakes from one /64: {upgraded} x 101, {refused} x 429; victim {report:?}",
        statuses.len()
    );
    assert_eq!(upgraded + refused, statuses.len(), "{statuses:?}");
    // The burst, one a second for 3 s, one of slack.
    assert!(
        upgraded <= 5 + ATTACK.as_secs() as usize + 1,
        "the /64 got {upgraded} upgrades: its addresses were counted apart"
    );
}

#[test]
fn a_full_table_never_refuses_a_stranger() {
    let gw = proxied_gateway(
        r#"{ "handshakes_per_second_per_ip": { "rate": 0.01, "burst": 1 },
             "max_tracked_clients": 32 }"#,
    );
    let addr = gw.addr();
    let victim = Victim::start(addr, "/ws/chat", Duration::from_millis(10));
    let path = "/ws/limited";
    run(async {
        // 32 prefixes, each holding a connection: the table is full of clients it may not
        // forget. A stranger is let in untracked, and the gateway says so.
        let mut held = Vec::new();
        for i in 0..32 {
            let me = format!("2001:db8:f:{i:x}::1");
            let (ws, _) = try_connect(addr, path, &[("X-Forwarded-For", &me)])
                .await
                .unwrap_or_else(|e| panic!("{me}: {e}"));
            held.push(ws);
        }
        assert_stranger_served(addr, "198.51.100.1");
        assert!(gw.wait_for("untracked", STEP).is_some(), "no warning");
        drop(held);
    });
    // New prefixes for 3 s, each spending its one token: the table fills with clients whose
    // buckets refill for 100 s, again and again. The least recently seen make room.
    let end = Instant::now() + ATTACK;
    let mut flooded = 0u32;
    while Instant::now() < end {
        let (net, host) = (0xe000 + (flooded >> 16), flooded & 0xffff);
        let me = format!("2001:db8:{net:x}:{host:x}::1");
        assert_eq!(
            handshake_status(addr, from(&me).as_bytes()),
            Some(101),
            "{me}"
        );
        flooded += 1;
        if flooded % 50 == 0 {
            assert_stranger_served(addr, &format!("198.51.100.{}", flooded / 50 % 250 + 2));
        }
    }
    assert!(
        gw.wait_for("least recently seen", STEP).is_some(),
        "no eviction"
    );
    let report = victim.assert_served(100);
    eprintln!("{flooded} prefixes flooded the table; victim {report:?}");
}
