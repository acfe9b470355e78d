//! A test PKI, and altering cached blobs on disk.

use super::*;

/// A fresh CA that no trust store knows, and a server certificate for IP 127.0.0.1 (not `localhost`) signed by it.
pub struct TestPki {
    pub ca_cert: rcgen::Certificate,
    pub leaf_cert: rcgen::Certificate,
    pub leaf_key: rcgen::KeyPair,
}

impl TestPki {
    pub fn new(ca_name: &str) -> TestPki {
        let ca_key = rcgen::KeyPair::generate().expect("ca key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, ca_name);
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);

        let leaf_key = rcgen::KeyPair::generate().expect("leaf key");
        let mut leaf_params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("leaf params");
        leaf_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "127.0.0.1");
        leaf_params.use_authority_key_identifier_extension = true;
        leaf_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_cert = leaf_params.signed_by(&leaf_key, &issuer).expect("leaf cert");
        TestPki {
            ca_cert,
            leaf_cert,
            leaf_key,
        }
    }
}

/// Rewrites a cached blob file with other bytes of the same length: its last byte flipped, inside a custom
/// section, so the bytes still look like Wasm. The store makes blobs read-only; the test owns the file.
pub fn alter_blob(path: &std::path::Path) {
    let mut bytes = std::fs::read(path).expect("read blob");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    let mut permissions = std::fs::metadata(path).expect("blob metadata").permissions();
    #[allow(clippy::permissions_set_readonly_false)] // the test owns this file and must write it
    permissions.set_readonly(false);
    std::fs::set_permissions(path, permissions).expect("make blob writable");
    std::fs::write(path, bytes).expect("alter blob");
}
