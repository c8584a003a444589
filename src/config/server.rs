//! The `server` block (listen address, workers, shutdown and reload timing, TLS on the
//! listener), the `admin` block, and the listen-address overrides from the environment.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_rustls::pki_types::pem::{self, PemObject};
use futures_rustls::pki_types::{CertificateDer, PrivateKeyDer};
use futures_rustls::rustls;
use serde_json::Value;

use super::fields::{Fields, Report};
use super::policies::Cidr;
use super::tls::{has_section, read_capped, resolve};
use super::{off_or_ms, Config, ConfigError};

/// What the `server` block says, with its defaults.
pub(super) struct Server {
    pub host: String,
    pub port: u16,
    pub workers: usize,
    pub shutdown_timeout: Duration,
    pub reload_poll: Option<Duration>,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub trusted_proxies: Vec<Cidr>,
    pub ipv6_prefix: u8,
}

/// Reads the `server` block; relative TLS file paths are from `base`.
pub(super) fn read_server(root: &mut Fields, base: &Path, report: &mut Report) -> Server {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut server = Server {
        host: "0.0.0.0".to_string(),
        port: 5900,
        workers: cpus,
        shutdown_timeout: Duration::from_millis(10_000),
        reload_poll: Some(Duration::from_millis(2000)),
        tls: None,
        trusted_proxies: Vec::new(),
        ipv6_prefix: 64,
    };
    let Some(v) = root.raw("server") else {
        return server;
    };
    let Some(mut s) = Fields::new("", "server.", v, report) else {
        return server;
    };
    if let Some(h) = s.string(report, "host") {
        server.host = h.to_string();
    }
    // Each default is the one set above.
    server.port = s.int(report, "port", 0, 65535, u64::from(server.port)) as u16;
    server.workers = s.int(report, "workers", 1, 1024, server.workers as u64) as usize;
    let ms = |d: Option<Duration>| d.map_or(0, |d| d.as_millis() as u64);
    let shutdown_ms = ms(Some(server.shutdown_timeout));
    let shutdown_ms = s.int(report, "shutdown_timeout_ms", 0, 3_600_000, shutdown_ms);
    server.shutdown_timeout = Duration::from_millis(shutdown_ms);
    let poll_ms = s.int(
        report,
        "reload_poll_ms",
        0,
        86_400_000,
        ms(server.reload_poll),
    );
    server.reload_poll = off_or_ms(poll_ms);
    if let Some(t) = s.raw("tls") {
        server.tls = if cfg!(feature = "tls-listener") {
            read_listener_tls(t, base, report)
        } else {
            s.error(report, "tls", FEATURE_TLS);
            None
        };
    }
    server.trusted_proxies = super::policies::read_trusted_proxies(&mut s, report);
    let prefix = u64::from(server.ipv6_prefix);
    server.ipv6_prefix = s.int(report, "ipv6_prefix", 32, 128, prefix) as u8;
    s.finish(report);
    server
}

impl Config {
    /// Whether the admin endpoints share the public listener (`admin` names its address):
    /// then a plain GET of `/metrics`, `/healthz` or `/readyz` there is answered by them.
    pub fn admin_on_public(&self) -> bool {
        self.admin
            .as_ref()
            .is_some_and(|(host, port)| *port != 0 && *port == self.port && *host == self.host)
    }
}

const FEATURE_TLS: &str = "this build has no TLS listener: build with the tls-listener feature \
     (the default), or end TLS in front of the gateway";
const FEATURE_ADMIN: &str = "this build has no admin listener (/metrics, /healthz, /readyz): \
     build with the admin feature (the default)";

/// Reads the `admin` block: `None` when it is absent.
pub(super) fn read_admin(root: &mut Fields, report: &mut Report) -> Option<(String, u16)> {
    let v = root.raw("admin")?;
    if !cfg!(feature = "admin") {
        root.error(report, "admin", FEATURE_ADMIN);
        return None;
    }
    let mut a = Fields::new("", "admin.", v, report)?;
    let host = a.string(report, "host").unwrap_or("127.0.0.1").to_string();
    let port = a.int(report, "port", 0, 65535, 9900) as u16;
    a.finish(report);
    Some((host, port))
}

/// `server.tls`: the certificate chain and key, loaded and checked into a rustls server config
/// (TLS 1.2 and 1.3, ALPN `http/1.1`). Every problem names the field, the file and what is
/// wrong with it.
fn read_listener_tls(
    v: &Value,
    base: &Path,
    report: &mut Report,
) -> Option<Arc<rustls::ServerConfig>> {
    let mut t = Fields::new("", "server.tls.", v, report)?;
    let cert_file = t
        .required_string(report, "cert_file")
        .map(|f| resolve(base, f));
    let key_file = t
        .required_string(report, "key_file")
        .map(|f| resolve(base, f));
    let certs = cert_file
        .as_deref()
        .and_then(|p| named(&t, report, "cert_file", p, load_certs(p)));
    let key = key_file
        .as_deref()
        .and_then(|p| named(&t, report, "key_file", p, load_key(p)));
    let built = match (certs, key, &cert_file, &key_file) {
        (Some(certs), Some(key), Some(cert_file), Some(key_file)) => {
            match build_listener_tls(certs, key, cert_file, key_file) {
                Ok(cfg) => Some(Arc::new(cfg)),
                Err((field, msg)) => {
                    t.error(report, field, msg);
                    None
                }
            }
        }
        _ => None,
    };
    t.finish(report);
    built
}

/// `r`'s value, or `None` with its error reported as `FIELD: PATH: problem`.
fn named<T>(
    t: &Fields,
    report: &mut Report,
    key: &str,
    path: &Path,
    r: Result<T, String>,
) -> Option<T> {
    r.map_err(|e| t.error(report, key, format!("{}: {e}", path.display())))
        .ok()
}

/// A rustls server config (ring provider, TLS 1.3 and 1.2, ALPN `http/1.1`) for this chain and
/// key. The error names the field to blame and says why, with the file's path.
fn build_listener_tls(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    cert_file: &Path,
    key_file: &Path,
) -> Result<rustls::ServerConfig, (&'static str, String)> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| ("cert_file", format!("TLS set-up failed: {e}")))?
        .with_no_client_auth();
    let (cert_shown, key_shown) = (cert_file.display(), key_file.display());
    let mut cfg = builder.with_single_cert(certs, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => (
            "key_file",
            format!(
                "{key_shown}: does not match the certificate in {cert_shown} (the first \
                 certificate there must be the server's own, followed by its chain)"
            ),
        ),
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => (
            "cert_file",
            format!("{cert_shown}: the first certificate cannot be parsed: {e}"),
        ),
        e => (
            "key_file",
            format!(
                "{key_shown}: unusable private key ({e}); RSA of 2048 bits or more, ECDSA \
                 P-256 or P-384, and Ed25519 keys work"
            ),
        ),
    })?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Every certificate in a PEM file, the server's own first.
fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read_capped(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not valid PEM: {e}"))?;
    if certs.is_empty() {
        let hint = if has_section(&pem, "PRIVATE KEY") || has_section(&pem, "RSA PRIVATE KEY") {
            " (it holds a private key: is it the key file?)"
        } else {
            ""
        };
        return Err(format!(
            "no certificate in it (want PEM -----BEGIN CERTIFICATE-----){hint}"
        ));
    }
    Ok(certs)
}

/// The first private key in a PEM file (PKCS#8, PKCS#1 RSA or SEC1 EC).
fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read_capped(path)?;
    match PrivateKeyDer::from_pem_slice(&pem) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) if has_section(&pem, "ENCRYPTED PRIVATE KEY") => {
            Err("the private key is encrypted: give it unencrypted \
             (openssl pkey -in KEY -out PLAIN.pem)"
                .to_string())
        }
        Err(pem::Error::NoItemsFound) => Err("no private key in it (want PEM -----BEGIN \
             PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY)"
            .to_string()),
        Err(e) => Err(format!("not valid PEM: {e}")),
    }
}

impl Config {
    /// Applies `KAIROS_HOST` / `KAIROS_PORT` (they win over the `server` block).
    pub fn apply_listen_env(
        &mut self,
        host: Option<String>,
        port: Option<String>,
    ) -> Result<(), ConfigError> {
        if let Some(h) = host.filter(|h| !h.is_empty()) {
            self.host = h;
        }
        if let Some(p) = port.filter(|p| !p.is_empty()) {
            self.port = p.parse().map_err(|_| {
                ConfigError::one(format!("KAIROS_PORT: {p:?} is not a port number (0-65535)"))
            })?;
        }
        Ok(())
    }
}
