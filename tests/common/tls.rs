//! TLS on both legs: a gateway's TLS listener (`server.tls`), `wss://` clients of it, and
//! `wss://` echo backends, each with a test PKI of its own.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_tungstenite::WebSocketStream;
use futures_rustls::client::TlsStream;
use futures_rustls::pki_types::{CertificateDer, ServerName};
use futures_rustls::rustls::{self, SupportedProtocolVersion};
use futures_rustls::TlsConnector;
use smol::net::TcpStream;

use super::{pki, spawn_backend, within, Pki, STEP};

/// A file under the temp dir with a unique name, removed on drop.
pub struct TempFile(pub PathBuf);

impl TempFile {
    pub fn new(name: &str, contents: &str) -> TempFile {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "kairos-tls-{}-{}-{name}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }

    /// The path as a JSON string.
    pub fn json(&self) -> String {
        json_path(&self.0)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub fn json_path(p: &Path) -> String {
    serde_json::to_string(p.to_str().unwrap()).unwrap()
}

/// A `"server": {"tls": ...}` member for `pki`'s leaf, with the files it names (keep them
/// alive until the gateway has loaded its config).
pub fn server_tls(pki: &Pki) -> (String, [TempFile; 2]) {
    let cert = TempFile::new("cert.pem", &pki.cert_pem);
    let key = TempFile::new("key.pem", &pki.key_pem);
    let member = format!(
        r#""server": {{ "tls": {{ "cert_file": {}, "key_file": {} }} }},"#,
        cert.json(),
        key.json()
    );
    (member, [cert, key])
}

/// A rustls client trusting `ca_pem`, speaking only `versions`, offering `alpn`.
pub fn client_config(
    ca_pem: &str,
    versions: &[&'static SupportedProtocolVersion],
    alpn: &[&str],
) -> Arc<rustls::ClientConfig> {
    use futures_rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Arc::new(cfg)
}

/// Every TLS version, ALPN `http/1.1`, trusting `ca_pem`.
pub fn default_client(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    client_config(ca_pem, rustls::ALL_VERSIONS, &["http/1.1"])
}

pub type Tls = TlsStream<TcpStream>;
pub type Wss = WebSocketStream<Tls>;

/// A TLS connection to the gateway, for the name `localhost`.
pub async fn tls_connect(gw: SocketAddr, cfg: Arc<rustls::ClientConfig>) -> std::io::Result<Tls> {
    let tcp = TcpStream::connect(gw).await?;
    let name = ServerName::try_from("localhost").unwrap();
    TlsConnector::from(cfg).connect(name, tcp).await
}

/// A `wss://localhost:PORT{path}` WebSocket through the gateway.
pub async fn wss_connect(gw: SocketAddr, cfg: Arc<rustls::ClientConfig>, path: &str) -> Wss {
    let tls = within(STEP, tls_connect(gw, cfg))
        .await
        .expect("no TLS handshake in time")
        .expect("TLS handshake with the gateway");
    let url = format!("wss://localhost:{}{path}", gw.port());
    match within(STEP, async_tungstenite::client_async(url, tls)).await {
        Some(Ok((ws, _))) => ws,
        Some(Err(e)) => panic!("WebSocket handshake over TLS failed: {e}"),
        None => panic!("no WebSocket handshake within {STEP:?}"),
    }
}

/// A TLS echo backend for `localhost` with a CA of its own; returns its address and the CA.
pub fn tls_echo_backend() -> (SocketAddr, String) {
    let pki = pki();
    let acceptor = pki.acceptor();
    let addr = spawn_backend(move |tcp| {
        let acceptor = acceptor.clone();
        async move {
            if let Ok(tls) = acceptor.accept(tcp).await {
                kairos_gateway::echo::handle(tls).await;
            }
        }
    });
    (addr, pki.ca_pem)
}

/// A config with one route `/ws/chat` to the `wss://localhost` echo `backend` (trusting
/// `backend_ca`), plus `extra` top-level members; with the file it names.
pub fn wss_backend_json(backend: SocketAddr, backend_ca: &str, extra: &str) -> (String, TempFile) {
    let ca_file = TempFile::new("backend-ca.pem", backend_ca);
    let json = super::config_json(
        backend,
        &format!(r#""tls": {{ "ca_file": {} }}, {extra}"#, ca_file.json()),
        "",
    )
    .replace("ws://127.0.0.1", "wss://localhost");
    (json, ca_file)
}

/// [`wss_backend_json`] with a TLS listener for `listener`'s certificate: `wss://` on both legs.
pub fn wss_both_legs_json(
    listener: &Pki,
    backend: SocketAddr,
    backend_ca: &str,
    extra: &str,
) -> (String, [TempFile; 3]) {
    let (member, [cert, key]) = server_tls(listener);
    let (json, ca_file) = wss_backend_json(backend, backend_ca, &format!("{member} {extra}"));
    (json, [ca_file, cert, key])
}
