//! TLS on the listener (`server.tls`), end to end: `wss://` clients through the gateway to
//! `ws://` and `wss://` backends, the TLS versions and ALPN it offers, what happens to clients
//! that do not speak TLS, and the start-up errors for bad certificate and key files. Real
//! gateway, real backends, real rustls clients, all on 127.0.0.1:0.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::{Error as WsError, Message};
use async_tungstenite::WebSocketStream;
use common::tls::{
    client_config, default_client, json_path, server_tls, tls_connect, tls_echo_backend,
    wss_both_legs_json, wss_connect, TempFile, Wss,
};
use common::{
    accept_after_head, config_json, pki, read_head, run, spawn_backend, start_echo, start_gateway,
    wait_until, within, GatewayProcess, Pki, STEP,
};
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use futures_rustls::pki_types::ServerName;
use futures_rustls::rustls::{self, ProtocolVersion, SupportedProtocolVersion};
use futures_rustls::TlsConnector;
use kairos_gateway::net::tls_handshake_failures;
use smol::net::TcpStream;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A gateway with a TLS listener for a fresh `localhost` certificate and one route `/ws/chat`
/// to `backend`; `extra` top-level members. Returns the address and the CA to trust.
fn tls_gateway(backend: SocketAddr, extra: &str) -> (SocketAddr, String) {
    let pki = pki();
    let (member, _files) = server_tls(&pki);
    let gw = start_gateway(&config_json(backend, &format!("{member} {extra}"), ""));
    (gw, pki.ca_pem)
}

/// The next data message (pings and pongs skipped), within [`STEP`].
async fn next_data<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>) -> Message {
    loop {
        match within(STEP, ws.next()).await {
            Some(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Some(Some(Ok(m))) => return m,
            other => panic!("no data message: {other:?}"),
        }
    }
}

/// Text and binary echo, then a clean close.
async fn echo_round_trip(mut ws: Wss) {
    ws.send(Message::text("hello over wss")).await.unwrap();
    assert_eq!(next_data(&mut ws).await, Message::text("hello over wss"));
    let blob: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(blob.clone())).await.unwrap();
    assert_eq!(next_data(&mut ws).await, Message::binary(blob));
    ws.close(None).await.unwrap();
    assert!(
        matches!(next_data(&mut ws).await, Message::Close(_)),
        "no close frame back"
    );
}

// ---------------------------------------------------------------------------------------------
// a) and b): wss:// clients to ws:// and wss:// backends
// ---------------------------------------------------------------------------------------------

#[test]
fn wss_client_through_tls_listener_to_ws_backend() {
    let (gw, ca) = tls_gateway(start_echo(), "");
    common::run(async {
        let ws = wss_connect(gw, default_client(&ca), "/ws/chat").await;
        echo_round_trip(ws).await;
    });
}

#[test]
fn wss_client_through_tls_listener_to_wss_backend() {
    let (backend, backend_ca) = tls_echo_backend();
    let pki = pki();
    let (json, _files) = wss_both_legs_json(&pki, backend, &backend_ca, "");
    let gw = start_gateway(&json);
    common::run(async {
        let ws = wss_connect(gw, default_client(&pki.ca_pem), "/ws/chat").await;
        echo_round_trip(ws).await;
    });
}

#[test]
fn refusals_are_answered_over_tls() {
    let (gw, ca) = tls_gateway(start_echo(), "");
    common::run(async {
        let tls = tls_connect(gw, default_client(&ca)).await.unwrap();
        let url = format!("wss://localhost:{}/no/such/route", gw.port());
        match within(STEP, async_tungstenite::client_async(url, tls)).await {
            Some(Err(WsError::Http(res))) => assert_eq!(res.status().as_u16(), 404),
            other => panic!("want a 404 over TLS, got {other:?}"),
        }
    });
}

// ---------------------------------------------------------------------------------------------
// c) versions and ALPN
// ---------------------------------------------------------------------------------------------

#[test]
fn tls12_and_tls13_clients_connect_and_alpn_is_http11() {
    let (gw, ca) = tls_gateway(start_echo(), "");
    let cases: [(&'static SupportedProtocolVersion, ProtocolVersion); 2] = [
        (&rustls::version::TLS12, ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, ProtocolVersion::TLSv1_3),
    ];
    common::run(async {
        for (version, want) in cases {
            // The client prefers h2; the gateway only speaks HTTP/1.1 and says so.
            let cfg = client_config(&ca, &[version], &["h2", "http/1.1"]);
            let tls = tls_connect(gw, cfg.clone()).await.expect("TLS handshake");
            let (_, session) = tls.get_ref();
            assert_eq!(session.protocol_version(), Some(want));
            assert_eq!(session.alpn_protocol(), Some(&b"http/1.1"[..]));
            drop(tls);
            let mut ws = wss_connect(gw, cfg, "/ws/chat").await;
            ws.send(Message::text(format!("{want:?}"))).await.unwrap();
            assert_eq!(next_data(&mut ws).await, Message::text(format!("{want:?}")));
        }
        // A client offering no ALPN at all is served too.
        let mut ws = wss_connect(
            gw,
            client_config(&ca, rustls::ALL_VERSIONS, &[]),
            "/ws/chat",
        )
        .await;
        ws.send(Message::text("no alpn")).await.unwrap();
        assert_eq!(next_data(&mut ws).await, Message::text("no alpn"));
    });
}

// ---------------------------------------------------------------------------------------------
// d) clients that do not speak TLS
// ---------------------------------------------------------------------------------------------

/// Reads until the gateway closes the connection; panics if it does not within [`STEP`].
async fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read_all = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    within(STEP, read_all)
        .await
        .expect("the gateway did not close the connection");
    got
}

#[test]
fn plain_and_garbage_clients_get_no_websocket_and_are_counted() {
    let (gw, ca) = tls_gateway(start_echo(), "");
    common::run(async {
        let before = tls_handshake_failures();
        // A plain ws:// client.
        match common::try_connect(gw, "/ws/chat", &[]).await {
            Err(WsError::Http(res)) => panic!("a plain client got an HTTP answer: {res:?}"),
            Err(_) => {}
            Ok(_) => panic!("a plain ws:// client got a WebSocket from the TLS listener"),
        }
        // Garbage, then the gateway closes. It may answer with a TLS alert, never with HTTP.
        let mut s = TcpStream::connect(gw).await.unwrap();
        s.write_all(b"\x00\x01garbage\r\n\r\nnot a TLS record at all\r\n")
            .await
            .unwrap();
        let got = read_until_closed(&mut s).await;
        assert!(
            !got.windows(4).any(|w| w == b"HTTP"),
            "garbage got an HTTP answer: {got:?}"
        );
        assert!(
            wait_until(STEP, || tls_handshake_failures() >= before + 2).await,
            "failures counted: {} before, {} now",
            before,
            tls_handshake_failures()
        );
        // The gateway still serves a good client.
        let mut ws = wss_connect(gw, default_client(&ca), "/ws/chat").await;
        ws.send(Message::text("still here")).await.unwrap();
        assert_eq!(next_data(&mut ws).await, Message::text("still here"));
    });
}

#[test]
fn silent_client_is_dropped_after_handshake_timeout() {
    let limits = r#""limits": { "handshake_timeout_ms": 300 },"#;
    let (gw, ca) = tls_gateway(start_echo(), limits);
    common::run(async {
        let before = tls_handshake_failures();
        let start = Instant::now();
        let mut s = TcpStream::connect(gw).await.unwrap();
        let got = read_until_closed(&mut s).await;
        assert!(got.is_empty(), "{got:?}");
        assert!(
            start.elapsed() >= Duration::from_millis(250),
            "closed after {:?}, before the handshake timeout",
            start.elapsed()
        );
        assert!(wait_until(STEP, || tls_handshake_failures() > before).await);
        // A client that does its handshake in time is unaffected.
        let mut ws = wss_connect(gw, default_client(&ca), "/ws/chat").await;
        ws.send(Message::text("in time")).await.unwrap();
        assert_eq!(next_data(&mut ws).await, Message::text("in time"));
    });
}

#[test]
fn tls_handshake_and_request_head_share_one_timeout_from_accept() {
    let limits = r#""limits": { "handshake_timeout_ms": 1000 },"#;
    let (gw, ca) = tls_gateway(start_echo(), limits);
    common::run(async {
        let start = Instant::now();
        let tcp = TcpStream::connect(gw).await.unwrap();
        // A slow client: its TLS handshake begins 600 ms after the connect, within the limit...
        smol::Timer::after(Duration::from_millis(600)).await;
        let name = ServerName::try_from("localhost").unwrap();
        let connector = TlsConnector::from(default_client(&ca));
        let mut tls = connector
            .connect(name, tcp)
            .await
            .expect("TLS handshake in time");
        // ...then its request head trickles, a byte every 50 ms, and never ends.
        let head = b"GET /ws/chat HTTP/1.1\r\nHost: localhost\r\nX-Slow: ";
        let mut buf = [0u8; 256];
        for i in 0.. {
            let byte = head.get(i).copied().unwrap_or(b'a');
            if tls.write_all(&[byte]).await.is_err() || tls.flush().await.is_err() {
                break;
            }
            // The gateway's close (EOF, alert or reset) ends the read.
            if within(Duration::from_millis(50), tls.read(&mut buf))
                .await
                .is_some()
            {
                break;
            }
            assert!(start.elapsed() < STEP, "the trickling client was never cut");
        }
        // Cut at the limit from accept (1 s), not a whole limit after the TLS handshake.
        let cut = start.elapsed();
        assert!(
            cut >= Duration::from_millis(900) && cut < Duration::from_millis(1450),
            "cut after {cut:?}; the limit is 1 s from accept"
        );
    });
}

// ---------------------------------------------------------------------------------------------
// e) what the backend sees
// ---------------------------------------------------------------------------------------------

#[test]
fn backend_sees_x_forwarded_proto_https() {
    let (tx, heads) = smol::channel::unbounded::<String>();
    let backend = spawn_backend(move |mut s| {
        let tx = tx.clone();
        async move {
            let head = read_head(&mut s).await;
            let _ = tx.send(head.clone()).await;
            let mut ws = accept_after_head(s, &head, "").await;
            while let Some(Ok(m)) = ws.next().await {
                if m.is_close() || ws.send(m).await.is_err() {
                    break;
                }
            }
        }
    });
    let (gw, ca) = tls_gateway(backend, "");
    common::run(async {
        let mut ws = wss_connect(gw, default_client(&ca), "/ws/chat").await;
        let head = within(STEP, heads.recv()).await.unwrap().unwrap();
        let protos: Vec<&str> = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .filter(|(n, _)| n.eq_ignore_ascii_case("X-Forwarded-Proto"))
            .map(|(_, v)| v.trim())
            .collect();
        assert_eq!(protos, ["https"], "{head}");
        ws.send(Message::text("proto")).await.unwrap();
        assert_eq!(next_data(&mut ws).await, Message::text("proto"));
    });
}

// ---------------------------------------------------------------------------------------------
// f) start-up errors
// ---------------------------------------------------------------------------------------------

/// Runs the binary on `json` (with `args`), expecting it to exit within [`STEP`]; returns the
/// exit code and stderr.
fn run_binary(json: &str, args: &[&str]) -> (i32, String) {
    let config = TempFile::new("config.json", json);
    let mut child = Command::new(env!("CARGO_BIN_EXE_kairos-gateway"))
        .args(args)
        .arg("--config")
        .arg(&config.0)
        .env_remove("KAIROS_HOST")
        .env_remove("KAIROS_PORT")
        .env_remove("KAIROS_CONFIG_PATH")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the gateway");
    let deadline = Instant::now() + STEP;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the gateway did not exit within {STEP:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut err = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status.code().expect("exited, not killed"), err)
}

/// A config for the binary: 127.0.0.1:0, one route, and this `server.tls` block.
fn binary_config(cert: &str, key: &str) -> String {
    format!(
        r#"{{ "version": 1,
             "server": {{ "host": "127.0.0.1", "port": 0, "workers": 1,
                          "tls": {{ "cert_file": {cert}, "key_file": {key} }} }},
             "routers": [{{ "protocol": "websocket", "external_path": "/ws/chat",
               "internal_path": "/ws", "methods": ["GET"],
               "backends": [{{ "host": "ws://127.0.0.1", "port": 3000 }}] }}] }}"#
    )
}

#[test]
fn startup_fails_on_missing_cert_file() {
    let pki = pki();
    let key = TempFile::new("key.pem", &pki.key_pem);
    let missing = std::env::temp_dir().join(format!(
        "kairos-tls-listener-{}-no-such-cert.pem",
        std::process::id()
    ));
    let json = binary_config(&json_path(&missing), &key.json());
    for args in [&[][..], &["--check"][..]] {
        let (code, err) = run_binary(&json, args);
        assert_ne!(code, 0, "{args:?}: {err}");
        let line = err
            .lines()
            .find(|l| l.contains("server.tls.cert_file"))
            .unwrap_or_else(|| panic!("{args:?}: no server.tls.cert_file line in:\n{err}"));
        assert!(
            line.contains(&format!(
                "server.tls.cert_file: {}: cannot read it: No such file or directory",
                missing.display()
            )),
            "{line}"
        );
        assert!(!err.contains("listening on"), "{err}");
    }
}

#[test]
fn startup_fails_on_key_file_without_a_key() {
    let pki = pki();
    let cert = TempFile::new("cert.pem", &pki.cert_pem);
    // A common mistake: the certificate given twice.
    let not_a_key = TempFile::new("not-a-key.pem", &pki.cert_pem);
    let (code, err) = run_binary(&binary_config(&cert.json(), &not_a_key.json()), &[]);
    assert_ne!(code, 0, "{err}");
    let want = format!(
        "server.tls.key_file: {}: no private key in it",
        not_a_key.0.display()
    );
    assert!(
        err.lines().any(|l| l.contains(&want)),
        "no line with {want:?} in:\n{err}"
    );
    assert!(!err.contains("listening on"), "{err}");
}

#[test]
fn a_reload_puts_a_new_certificate_in_force_and_open_connections_keep_theirs() {
    let backend = start_echo();
    let (old, new) = (pki(), pki());
    let config = |pki: &Pki| {
        let cert = TempFile::new("cert.pem", &pki.cert_pem);
        let key = TempFile::new("key.pem", &pki.key_pem);
        let member = format!(
            r#""server": {{ "reload_poll_ms": 50, "tls": {{ "cert_file": {}, "key_file": {} }} }},"#,
            cert.json(),
            key.json()
        );
        (config_json(backend, &member, ""), [cert, key])
    };
    let (json, _old_files) = config(&old);
    let gw = GatewayProcess::start(&json, None);
    let addr = gw.addr();
    run(async {
        let mut open = wss_connect(addr, default_client(&old.ca_pem), "/ws/chat").await;
        let (json, _new_files) = config(&new);
        gw.rewrite(&json);
        assert!(gw.wait_for("applied to new connections", STEP).is_some());
        // New connections get the new certificate: a client trusting only the old CA fails.
        let refused = tls_connect(addr, default_client(&old.ca_pem)).await;
        assert!(refused.is_err(), "the old certificate is still served");
        echo_round_trip(wss_connect(addr, default_client(&new.ca_pem), "/ws/chat").await).await;
        // The connection opened before keeps going.
        open.send(Message::text("still here")).await.unwrap();
        assert_eq!(next_data(&mut open).await, Message::text("still here"));
    });
}
