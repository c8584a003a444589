//! The edge build's JWT crypto (built without the `jwt-asymmetric` feature): HMAC
//! verification on ring, which the TLS stack links anyway. jsonwebtoken's `rust_crypto`
//! provider links every algorithm's signer and verifier (RSA, ECDSA, EdDSA big-number code)
//! whether a deployment uses them or not; a device that only sees HS256/384/512 tokens needs
//! none of it.

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{ErrorKind, Result};
use jsonwebtoken::signature::{self, Verifier};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey};
use ring::hmac;

/// HS256, HS384, HS512. The gateway only verifies; signing is there for whoever shares its
/// process (the tests make their tokens with `jsonwebtoken::encode`).
static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: hmac_signer,
    verifier_factory: hmac_verifier,
    key_utils: KeyUtils::new_unimplemented(),
};

/// Makes this provider jsonwebtoken's for the process (once; later calls change nothing).
pub fn install() {
    let _ = PROVIDER.install_default();
}

fn ring_algorithm(alg: &Algorithm) -> Result<hmac::Algorithm> {
    match alg {
        Algorithm::HS256 => Ok(hmac::HMAC_SHA256),
        Algorithm::HS384 => Ok(hmac::HMAC_SHA384),
        Algorithm::HS512 => Ok(hmac::HMAC_SHA512),
        _ => Err(ErrorKind::InvalidAlgorithm.into()),
    }
}

fn hmac_signer(alg: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>> {
    if key.family() != AlgorithmFamily::Hmac {
        return Err(ErrorKind::InvalidKeyFormat.into());
    }
    let key = hmac::Key::new(ring_algorithm(alg)?, key.as_bytes());
    Ok(Box::new(Hmac { alg: *alg, key }))
}

fn hmac_verifier(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
    if key.family() != AlgorithmFamily::Hmac {
        return Err(ErrorKind::InvalidKeyFormat.into());
    }
    let key = hmac::Key::new(ring_algorithm(alg)?, key.try_get_as_bytes()?);
    Ok(Box::new(Hmac { alg: *alg, key }))
}

struct Hmac {
    alg: Algorithm,
    key: hmac::Key,
}

impl Verifier<Vec<u8>> for Hmac {
    fn verify(&self, msg: &[u8], tag: &Vec<u8>) -> std::result::Result<(), signature::Error> {
        // Constant time.
        hmac::verify(&self.key, msg, tag).map_err(|_| signature::Error::new())
    }
}

impl signature::Signer<Vec<u8>> for Hmac {
    fn try_sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, signature::Error> {
        Ok(hmac::sign(&self.key, msg).as_ref().to_vec())
    }
}

impl JwtSigner for Hmac {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

impl JwtVerifier for Hmac {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_verifies_hs256_384_512_and_refuses_other_tags_and_algorithms() {
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            let signer = hmac_signer(&alg, &EncodingKey::from_secret(b"k")).expect("signer");
            let tag = signer.try_sign(b"msg").expect("tag");
            let v = hmac_verifier(&alg, &DecodingKey::from_secret(b"k")).expect("verifier");
            assert!(v.verify(b"msg", &tag).is_ok());
            assert!(v.verify(b"msh", &tag).is_err());
            let other = hmac_verifier(&alg, &DecodingKey::from_secret(b"j")).expect("verifier");
            assert!(other.verify(b"msg", &tag).is_err());
            assert_eq!(v.algorithm(), alg);
        }
        assert!(hmac_verifier(&Algorithm::RS256, &DecodingKey::from_secret(b"k")).is_err());
        let rsa = DecodingKey::from_rsa_der(b"not a key");
        assert!(hmac_verifier(&Algorithm::HS256, &rsa).is_err());
    }
}
