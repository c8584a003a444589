//! `tls`: how the gateway trusts `wss://` backends; and the reading of PEM files.

use std::path::Path;

use super::fields::At;
use super::MAX_CONFIG_BYTES;

/// The TLS listener's settings (`server.tls`). A build without the `tls-listener` feature
/// has none: the type is empty, so no value of it exists.
#[cfg(feature = "tls-listener")]
pub type ServerTls = std::sync::Arc<futures_rustls::rustls::ServerConfig>;
/// The TLS listener's settings: none in this build (no `tls-listener` feature).
#[cfg(not(feature = "tls-listener"))]
#[derive(Debug, Clone)]
pub enum ServerTls {}

/// The TLS client settings for `wss://` backends. A build without the `tls-backend`
/// feature has none: the type is empty.
#[cfg(feature = "tls-backend")]
pub type ClientTls = std::sync::Arc<futures_rustls::rustls::ClientConfig>;
/// The TLS client settings for `wss://` backends: none in this build (no `tls-backend`).
#[cfg(not(feature = "tls-backend"))]
#[derive(Debug, Clone)]
pub enum ClientTls {}

/// What a build without `tls-backend` says of a `wss://` backend or `tls.ca_file`.
pub(super) const FEATURE_TLS_BACKEND: &str = "this build has no TLS client: wss:// backends and \
     tls.ca_file need a build with the tls-backend feature (the default)";

/// No TLS client in this build: the problem is reported.
#[cfg(not(feature = "tls-backend"))]
pub(super) fn build_backend_tls(_: Option<&Path>, at: &mut At) -> Option<ClientTls> {
    at.error("tls.ca_file", FEATURE_TLS_BACKEND);
    None
}

/// The TLS client settings for `wss://` backends: the webpki roots plus `ca_file`'s.
#[cfg(feature = "tls-backend")]
pub(super) fn build_backend_tls(ca_file: Option<&Path>, at: &mut At) -> Option<ClientTls> {
    use futures_rustls::pki_types::{pem::PemObject, CertificateDer};
    use futures_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let shown = path.display();
        match read_capped(path) {
            Err(e) => at.error("tls.ca_file", format_args!("{shown}: {e}")),
            Ok(pem) => {
                let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&pem).collect();
                match certs {
                    Err(e) => at.error("tls.ca_file", format_args!("{shown}: {e}")),
                    Ok(certs) if certs.is_empty() => at.error(
                        "tls.ca_file",
                        format_args!("{shown}: no PEM certificate in it"),
                    ),
                    Ok(certs) => {
                        let (_, bad) = roots.add_parsable_certificates(certs);
                        if bad > 0 {
                            at.error(
                                "tls.ca_file",
                                format_args!("{shown}: {bad} certificate(s) could not be parsed"),
                            );
                        }
                    }
                }
            }
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| at.error("tls", e))
        .ok()?;
    let mut cfg = builder.with_root_certificates(roots).with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Some(std::sync::Arc::new(cfg))
}

/// A file's bytes (a PEM key or certificate, the config itself), at most
/// [`MAX_CONFIG_BYTES`] of them: a wrong path to a huge file or a device is refused, not read.
pub(super) fn read_capped(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_CONFIG_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("cannot read it: {e}"))?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(format!(
            "is larger than {MAX_CONFIG_BYTES} bytes: not a PEM file"
        ));
    }
    Ok(bytes)
}

/// Whether a PEM section of this kind (`PRIVATE KEY`, say) is in `pem`.
pub(super) fn has_section(pem: &[u8], label: &str) -> bool {
    let begin = format!("-----BEGIN {label}-----");
    pem.windows(begin.len()).any(|w| w == begin.as_bytes())
}
