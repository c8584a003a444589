//! The `server` block (listen address, workers, shutdown and reload timing, TLS on the
//! listener), the `admin` block, and the listen-address overrides from the environment.

use std::path::Path;
use std::sync::Arc;

use futures_rustls::pki_types::pem::{self, PemObject};
use futures_rustls::pki_types::{CertificateDer, PrivateKeyDer};
use futures_rustls::rustls;
use serde_json::Value;

use super::fields::{At, Fields, Object};
use super::policies::Cidr;
use super::tls::{has_section, read_capped};
use super::{ms, off_or_ms, Config, ConfigError, DAY_MS};

/// The `server` block's fields: they set the listener's part of [`Config`] (defaults there).
pub(super) fn fields(c: &mut Config, f: &mut Fields) {
    f.text("host", |h, _| c.host = h.to_string());
    f.int("port", 0, 65535, |n| c.port = n as u16);
    f.int("workers", 1, 1024, |n| c.workers = n as usize);
    f.int("shutdown_timeout_ms", 0, 3_600_000, |n| {
        c.shutdown_timeout = ms(n)
    });
    f.int("reload_poll_ms", 0, DAY_MS, |n| {
        c.reload_poll = off_or_ms(n)
    });
    f.any("tls", |v, at| {
        if cfg!(feature = "tls-listener") {
            c.listener_tls = at.object::<ListenerTls>(v).and_then(|t| t.built)
        } else {
            at.fail(FEATURE_TLS)
        }
    });
    f.texts("trusted_proxies", |list, at| {
        c.trusted_proxies = list
            .iter()
            .filter_map(|t| Cidr::parse(t).map_err(|e| at.fail(e)).ok())
            .collect()
    });
    f.int("ipv6_prefix", 32, 128, |n| c.ipv6_prefix = n as u8);
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

/// The `admin` block: its listener's host and port.
struct Admin {
    host: String,
    port: u16,
}

impl Default for Admin {
    fn default() -> Admin {
        Admin {
            host: "127.0.0.1".to_string(),
            port: 9900,
        }
    }
}

impl Object for Admin {
    fn fields(&mut self, f: &mut Fields) {
        f.text("host", |h, _| self.host = h.to_string());
        f.int("port", 0, 65535, |n| self.port = n as u16);
    }
}

const FEATURE_TLS: &str = "this build has no TLS listener: build with the tls-listener feature \
     (the default), or end TLS in front of the gateway";
const FEATURE_ADMIN: &str = "this build has no admin listener (/metrics, /healthz, /readyz): \
     build with the admin feature (the default)";

/// Reads the `admin` block (`None`: not an object, or a build without the admin listener).
pub(super) fn admin(v: &Value, at: &mut At) -> Option<(String, u16)> {
    if !cfg!(feature = "admin") {
        at.fail(FEATURE_ADMIN);
        return None;
    }
    at.object::<Admin>(v).map(|a| (a.host, a.port))
}

/// `server.tls`: the certificate chain and key files; once read, loaded and checked into a
/// rustls server config (TLS 1.2 and 1.3, ALPN `http/1.1`). Every problem names the field,
/// the file and what is wrong with it.
#[derive(Default)]
struct ListenerTls {
    built: Option<Arc<rustls::ServerConfig>>,
}

impl Object for ListenerTls {
    fn fields(&mut self, f: &mut Fields) {
        let (mut cert, mut key) = (None, None);
        f.required("is required")
            .text("cert_file", |file, at| cert = Some(at.env.resolve(file)));
        f.required("is required")
            .text("key_file", |file, at| key = Some(at.env.resolve(file)));
        if let (Some(cert_file), Some(key_file)) = (cert, key) {
            self.built = load(&cert_file, &key_file, f.at());
        }
    }
}

/// The chain and key in these files, checked into a rustls server config; `None` with the
/// problems reported.
fn load(cert_file: &Path, key_file: &Path, at: &mut At) -> Option<Arc<rustls::ServerConfig>> {
    let mut named = |key, path: &Path, e| at.error(key, format_args!("{}: {e}", path.display()));
    let certs = load_certs(cert_file).map_err(|e| named("cert_file", cert_file, e));
    let key = load_key(key_file).map_err(|e| named("key_file", key_file, e));
    let (Ok(certs), Ok(key)) = (certs, key) else {
        return None;
    };
    build_listener_tls(certs, key, cert_file, key_file)
        .map_err(|(field, msg)| at.error(field, msg))
        .ok()
        .map(Arc::new)
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
