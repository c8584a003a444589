//! `server.tls`: the TLS listener's certificate chain and key (a build with the
//! `tls-listener` feature only).

use std::path::Path;
use std::sync::Arc;

use futures_rustls::pki_types::pem::{self, PemObject};
use futures_rustls::pki_types::{CertificateDer, PrivateKeyDer};
use futures_rustls::rustls;

use super::fields::{At, Fields, Object};
use super::tls::{has_section, read_capped};

/// `server.tls`: the certificate chain and key files; once read, loaded and checked into a
/// rustls server config (TLS 1.2 and 1.3, ALPN `http/1.1`). Every problem names the field,
/// the file and what is wrong with it.
#[derive(Default)]
pub(super) struct ListenerTls {
    pub(super) built: Option<Arc<rustls::ServerConfig>>,
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
