//! Content digests (`algorithm:hex`) and their verification.

use std::fmt;
use std::str::FromStr;

use ring::digest::{Algorithm, SHA256, SHA384, SHA512};
use thiserror::Error;

/// A content digest as the distribution spec writes it, `sha256:` + 64 (or `sha384:` + 96,
/// `sha512:` + 128) lowercase hex digits.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

/// A string that is not a digest this client can verify.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("{0:?} is not a sha256, sha384 or sha512 digest (algorithm:lowercase-hex)")]
pub struct DigestParseError(String);

impl Digest {
    /// The sha256 digest of `bytes`.
    pub fn sha256(bytes: &[u8]) -> Self {
        Self::compute(&SHA256, "sha256", bytes)
    }

    /// The digest of `bytes` with this digest's algorithm.
    pub fn of_same_algorithm(&self, bytes: &[u8]) -> Self {
        let (name, algorithm) = self.algorithm();
        Self::compute(algorithm, name, bytes)
    }

    /// Whether `bytes` hash to this digest.
    pub fn matches(&self, bytes: &[u8]) -> bool {
        self.of_same_algorithm(bytes) == *self
    }

    /// `algorithm:hex`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn algorithm(&self) -> (&'static str, &'static Algorithm) {
        match self.0.split_once(':').map(|(a, _)| a) {
            Some("sha384") => ("sha384", &SHA384),
            Some("sha512") => ("sha512", &SHA512),
            _ => ("sha256", &SHA256),
        }
    }

    fn compute(algorithm: &'static Algorithm, name: &str, bytes: &[u8]) -> Self {
        let hash = ring::digest::digest(algorithm, bytes);
        let mut out = String::with_capacity(name.len() + 1 + 2 * hash.as_ref().len());
        out.push_str(name);
        out.push(':');
        for byte in hash.as_ref() {
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
        Self(out)
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl FromStr for Digest {
    type Err = DigestParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex_len = match s.split_once(':') {
            Some(("sha256", hex)) => (hex, 64),
            Some(("sha384", hex)) => (hex, 96),
            Some(("sha512", hex)) => (hex, 128),
            _ => return Err(DigestParseError(s.to_owned())),
        };
        let (hex, len) = hex_len;
        if hex.len() == len && hex.bytes().all(|b| HEX.contains(&b)) {
            Ok(Self(s.to_owned()))
        } else {
            Err(DigestParseError(s.to_owned()))
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_known_input() {
        assert_eq!(
            Digest::sha256(b"").as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn verifies_with_the_digest_algorithm() {
        for (name, algorithm) in [
            ("sha256", &SHA256),
            ("sha384", &SHA384),
            ("sha512", &SHA512),
        ] {
            let digest: Digest = Digest::compute(algorithm, name, b"x")
                .as_str()
                .parse()
                .expect("a digest");
            assert!(digest.as_str().starts_with(name));
            assert!(digest.matches(b"x"), "{digest}");
            assert!(!digest.matches(b"x\n"), "{digest}");
        }
    }

    #[test]
    fn refuses_what_is_not_a_digest() {
        for bad in [
            "",
            "sha256:",
            "sha256:ABC",
            "md5:d41d8cd98f00b204e9800998ecf8427e",
            &format!("sha256:{}", "A".repeat(64)),
            &format!("sha256:{}", "a".repeat(63)),
            &format!("sha384:{}", "a".repeat(64)),
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad:?} parsed");
        }
    }
}
