//! The public key of `jwt.public_key_file`: a PEM file read here into the DER that
//! jsonwebtoken's `DecodingKey::from_*_der` takes. jsonwebtoken's own PEM reading (its
//! `use_pem` feature) links a general ASN.1 library and a date library, 80 KB of the
//! binary, for the three shapes a public key comes in:
//!
//! - `PUBLIC KEY` (SubjectPublicKeyInfo, RFC 5280): an algorithm, then the key as a bit string;
//!   RSA (PKCS#1 `RSAPublicKey`), EC (an uncompressed point) or Ed25519 (32 bytes);
//! - `RSA PUBLIC KEY` (PKCS#1): the `RSAPublicKey` itself.
//!
//! The key is checked for its shape here, so that a wrong file is an error at start-up rather
//! than a 401 for every token.

/// The kind of key an algorithm family needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Rsa,
    Ec,
    Ed,
}

/// `rsaEncryption`, `id-ecPublicKey` and `id-Ed25519`, as DER object identifier contents.
const OIDS: [(&[u8], Kind, &str); 3] = [
    (
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01],
        Kind::Rsa,
        "RSA",
    ),
    (&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01], Kind::Ec, "EC"),
    (&[0x2b, 0x65, 0x70], Kind::Ed, "Ed25519"),
];

/// DER tags.
const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const OID: u8 = 0x06;
const BIT_STRING: u8 = 0x03;

/// The DER key of `kind` in `pem`; `Err` says what is wrong.
pub(super) fn public_key(pem: &[u8], kind: Kind) -> Result<Vec<u8>, String> {
    let text = std::str::from_utf8(pem).map_err(|_| "not text".to_string())?;
    let (label, der) = block(text)?;
    let key = match (label, kind) {
        ("RSA PUBLIC KEY", Kind::Rsa) => der,
        ("PUBLIC KEY", _) => spki(&der, kind)?,
        (other, _) => return Err(format!("a PEM block of {other:?}, not PUBLIC KEY")),
    };
    let shaped = match kind {
        Kind::Rsa => rsa_shaped(&key),
        // P-256 and P-384 points, uncompressed.
        Kind::Ec => matches!(key.len(), 65 | 97) && key[0] == 0x04,
        Kind::Ed => key.len() == 32,
    };
    match shaped {
        true => Ok(key),
        false => Err("the key inside is malformed".into()),
    }
}

/// The first PEM block of `text`: its label and its decoded contents.
fn block(text: &str) -> Result<(&str, Vec<u8>), String> {
    let no_block = || "no -----BEGIN ...----- block".to_string();
    let start = text.find("-----BEGIN ").ok_or_else(no_block)?;
    let rest = &text[start + 11..];
    let (label, rest) = rest.split_once("-----").ok_or_else(no_block)?;
    let end = format!("-----END {label}-----");
    let body = &rest[..rest.find(&end).ok_or_else(|| format!("no {end} line"))?];
    let der = base64(body).ok_or_else(|| "bad base64 in the PEM block".to_string())?;
    Ok((label, der))
}

/// Standard base64 (`=` padding, line breaks and other white space ignored).
fn base64(text: &str) -> Option<Vec<u8>> {
    let body = text.bytes().filter(|c| !c.is_ascii_whitespace());
    super::base64_decode(body, false)
}

/// One DER element of `der`: its tag, its contents, and what follows it.
fn tlv(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = match first {
        n if n < 0x80 => (usize::from(n), rest),
        n @ 0x81..=0x84 => {
            let (bytes, rest) = rest.split_at_checked(usize::from(n & 0x7f))?;
            (
                bytes.iter().fold(0usize, |l, &b| l << 8 | usize::from(b)),
                rest,
            )
        }
        _ => return None,
    };
    let (contents, rest) = rest.split_at_checked(len)?;
    Some((tag, contents, rest))
}

/// The key of a SubjectPublicKeyInfo, which must be of `kind`.
fn spki(der: &[u8], kind: Kind) -> Result<Vec<u8>, String> {
    let malformed = || "not a SubjectPublicKeyInfo".to_string();
    let (SEQUENCE, info, _) = tlv(der).ok_or_else(malformed)? else {
        return Err(malformed());
    };
    let (SEQUENCE, algorithm, rest) = tlv(info).ok_or_else(malformed)? else {
        return Err(malformed());
    };
    let (OID, oid, _) = tlv(algorithm).ok_or_else(malformed)? else {
        return Err(malformed());
    };
    let (BIT_STRING, bits, _) = tlv(rest).ok_or_else(malformed)? else {
        return Err(malformed());
    };
    match OIDS.iter().find(|(o, _, _)| *o == oid) {
        Some((_, k, _)) if *k == kind => {}
        Some((_, _, name)) => return Err(format!("an {name} key")),
        None => return Err("a key of an algorithm the gateway does not verify".into()),
    }
    // The first byte counts the unused bits of the last one: a key has none.
    match bits.split_first() {
        Some((0, key)) => Ok(key.to_vec()),
        _ => Err(malformed()),
    }
}

/// Whether `der` is a PKCS#1 `RSAPublicKey`: a sequence of the modulus and the exponent.
fn rsa_shaped(der: &[u8]) -> bool {
    let Some((SEQUENCE, key, _)) = tlv(der) else {
        return false;
    };
    let Some((INTEGER, modulus, rest)) = tlv(key) else {
        return false;
    };
    matches!(tlv(rest), Some((INTEGER, _, _))) && modulus.len() >= 128
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!("tests/fixtures/{name}")).expect("fixture")
    }

    #[test]
    fn each_kind_of_key_is_read_from_its_spki() {
        assert!(public_key(&fixture("rsa_public.pem"), Kind::Rsa).is_ok());
        let ec = public_key(&fixture("ec_public.pem"), Kind::Ec).expect("ec");
        assert_eq!((ec.len(), ec[0]), (65, 4));
        assert_eq!(
            public_key(&fixture("ed_public.pem"), Kind::Ed)
                .expect("ed")
                .len(),
            32
        );
    }

    #[test]
    fn a_key_of_another_kind_or_no_key_is_refused_with_the_reason() {
        let ec = fixture("ec_public.pem");
        assert_eq!(public_key(&ec, Kind::Rsa), Err("an EC key".to_string()));
        let none = public_key(b"hello, I am not a key\n", Kind::Rsa);
        assert_eq!(none, Err("no -----BEGIN ...----- block".to_string()));
        let cert = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let refused = public_key(cert, Kind::Rsa).unwrap_err();
        assert!(refused.contains("\"CERTIFICATE\""), "{refused}");
        let bad = b"-----BEGIN PUBLIC KEY-----\nMIIB!!\n-----END PUBLIC KEY-----\n";
        assert_eq!(
            public_key(bad, Kind::Rsa),
            Err("bad base64 in the PEM block".into())
        );
        let short = b"-----BEGIN PUBLIC KEY-----\nMAA=\n-----END PUBLIC KEY-----\n";
        assert!(public_key(short, Kind::Rsa).is_err());
    }

    #[test]
    fn base64_decodes_with_padding_and_line_breaks() {
        assert_eq!(base64("aGVs\nbG8=").as_deref(), Some(&b"hello"[..]));
        assert_eq!(base64("aGk=").as_deref(), Some(&b"hi"[..]));
    }
}
