//! `tls`: how the gateway trusts `wss://` backends; and the reading of PEM files.

use std::path::Path;
use std::sync::Arc;

use futures_rustls::rustls;

use super::fields::At;
use super::MAX_CONFIG_BYTES;

/// The TLS client settings for `wss://` backends: the webpki roots plus `ca_file`'s.
pub(super) fn build_backend_tls(
    ca_file: Option<&Path>,
    at: &mut At,
) -> Option<Arc<rustls::ClientConfig>> {
    use futures_rustls::pki_types::{pem::PemObject, CertificateDer};
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
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| at.error("tls", e))
        .ok()?;
    let mut cfg = builder.with_root_certificates(roots).with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Some(Arc::new(cfg))
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
