//! TLS for the data stores: one crypto provider for the whole binary, and the roots a
//! server certificate is verified against (web PKI, Amazon RDS, an optional private CA).

use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// The Amazon RDS root CAs for every region (see `shared/certs/README.md`).
const RDS_GLOBAL_BUNDLE: &[u8] = include_bytes!("../../certs/rds-global-bundle.pem");

/// Makes aws-lc-rs the process-wide rustls provider. Every client (PostgreSQL, Redis,
/// the AWS SDK, reqwest, Stripe) then agrees on one, and a second backend compiled in by
/// some dependency can no longer make rustls panic at the first handshake. Idempotent.
pub fn install_crypto_provider() {
    // Err means a provider is installed already (by an earlier call): nothing to do.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Parses every certificate of a PEM file; `what` names the setting in errors.
pub fn pem_certificates(pem: &[u8], what: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("configuration error: {what}: not a PEM file: {e}"))?;
    if certs.is_empty() {
        anyhow::bail!("configuration error: {what}: no certificate in the file");
    }
    Ok(certs)
}

/// Reads the PEM file a `*_CA_FILE` setting names.
pub fn read_ca_file(path: &str, var: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| anyhow::anyhow!("configuration error: {var}: {path}: {e}"))
}

/// Web PKI roots + the Amazon RDS bundle + the certificates of `extra` (a private CA).
pub fn database_roots(extra: Option<&[u8]>) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let (added, _) = roots.add_parsable_certificates(pem_certificates(
        RDS_GLOBAL_BUNDLE,
        "the embedded RDS CA bundle",
    )?);
    debug_assert!(added > 0);
    if let Some(pem) = extra {
        for cert in pem_certificates(pem, "DATABASE_CA_FILE")? {
            roots
                .add(cert)
                .map_err(|e| anyhow::anyhow!("configuration error: DATABASE_CA_FILE: {e}"))?;
        }
    }
    Ok(roots)
}

/// A client configuration verifying chain and host name against `roots`.
pub fn client_config(roots: RootCertStore) -> rustls::ClientConfig {
    install_crypto_provider();
    rustls::ClientConfig::builder()
        .with_root_certificates(Arc::new(roots))
        .with_no_client_auth()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rds_bundle_is_real_and_complete() {
        let certs = pem_certificates(RDS_GLOBAL_BUNDLE, "bundle").unwrap();
        assert_eq!(certs.len(), 87);
        let mut roots = RootCertStore::empty();
        let (added, ignored) = roots.add_parsable_certificates(certs);
        assert_eq!((added, ignored), (87, 0));
        let store = database_roots(None).unwrap();
        assert_eq!(store.len(), webpki_roots::TLS_SERVER_ROOTS.len() + 87);
    }

    #[test]
    fn bad_ca_file_is_named() {
        let err = database_roots(Some(b"not a certificate")).unwrap_err();
        assert!(err.to_string().contains("DATABASE_CA_FILE"), "{err}");
    }
}
