//! `tls`: how the gateway trusts `wss://` backends, and file paths relative to the config.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_rustls::rustls;

use super::fields::{Fields, Report};

/// `tls`: the extra roots for `wss://` backends.
pub(super) fn read_tls(root: &mut Fields, base: &Path, report: &mut Report) -> Option<PathBuf> {
    let v = root.raw("tls")?;
    let mut t = Fields::new("", "tls.", v, report)?;
    let ca = t.string(report, "ca_file").map(|f| resolve(base, f));
    t.finish(report);
    ca
}

/// `file` relative to the config file's directory `base` (an absolute path as it is).
pub(super) fn resolve(base: &Path, file: &str) -> PathBuf {
    let p = Path::new(file);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// The TLS client settings for `wss://` backends: the webpki roots plus `ca_file`'s.
pub(super) fn build_backend_tls(
    ca_file: Option<&Path>,
    report: &mut Report,
) -> Option<Arc<rustls::ClientConfig>> {
    use futures_rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let shown = path.display();
        match CertificateDer::pem_file_iter(path) {
            Err(e) => report.errors.push(format!("tls.ca_file: {shown}: {e}")),
            Ok(iter) => {
                let certs: Result<Vec<_>, _> = iter.collect();
                match certs {
                    Err(e) => report.errors.push(format!("tls.ca_file: {shown}: {e}")),
                    Ok(certs) if certs.is_empty() => report
                        .errors
                        .push(format!("tls.ca_file: {shown}: no PEM certificate in it")),
                    Ok(certs) => {
                        let (_, bad) = roots.add_parsable_certificates(certs);
                        if bad > 0 {
                            report.errors.push(format!(
                                "tls.ca_file: {shown}: {bad} certificate(s) could not be parsed"
                            ));
                        }
                    }
                }
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| report.errors.push(format!("tls: {e}")))
        .ok()?;
    let mut cfg = builder.with_root_certificates(roots).with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Some(Arc::new(cfg))
}
