//! Password storage: argon2id over the md5 digest the protocol sends.
//!
//! Clients send md5(password) as 32 hex digits (FORMAT.md). That digest is a password
//! equivalent, so it is never stored: the store keeps an argon2id PHC string with a random
//! salt. The digest is lowercased first, so either case logs in. These functions are CPU-heavy
//! (tens of milliseconds): the server runs them on worker threads only.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use md5::{Digest, Md5};

/// argon2id cost parameters. Checking a stored hash uses the parameters stored with it, so
/// changing these affects new hashes only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashParams {
    pub memory_kib: u32,
    pub iterations: u32,
}

/// Why a hash could not be made.
#[derive(Debug)]
pub enum HashError {
    /// The parameters are out of argon2's range.
    Params(argon2::Error),
    /// The OS random source failed.
    Random(getrandom::Error),
    Hash(argon2::password_hash::Error),
}

impl std::fmt::Display for HashError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HashError::Params(e) => write!(f, "bad argon2 parameters: {e}"),
            HashError::Random(e) => write!(f, "random source failed: {e}"),
            HashError::Hash(e) => write!(f, "hashing failed: {e}"),
        }
    }
}

impl std::error::Error for HashError {}

/// The argon2id PHC string for an md5 hex digest.
pub fn hash(params: HashParams, md5_hex: &str) -> Result<String, HashError> {
    let p = Params::new(params.memory_kib, params.iterations, 1, None).map_err(HashError::Params)?;
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, p);
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(HashError::Random)?;
    let salt = SaltString::encode_b64(&salt).map_err(HashError::Hash)?;
    let digest = md5_hex.to_ascii_lowercase();
    Ok(argon.hash_password(digest.as_bytes(), &salt).map_err(HashError::Hash)?.to_string())
}

/// Whether `md5_hex` matches the stored PHC string. A malformed stored hash never matches.
pub fn verify(phc: &str, md5_hex: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let digest = md5_hex.to_ascii_lowercase();
    Argon2::default().verify_password(digest.as_bytes(), &parsed).is_ok()
}

/// md5 of a plain password as lowercase hex: what a client sends.
pub fn md5_hex(plain: &str) -> String {
    Md5::digest(plain.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHEAP: HashParams = HashParams { memory_kib: 64, iterations: 1 };

    #[test]
    fn md5_matches_the_known_digest() {
        assert_eq!(md5_hex("password"), "5f4dcc3b5aa765d61d8327deb882cf99");
    }

    #[test]
    fn a_hash_verifies_its_digest_in_either_case_only() {
        let h = hash(CHEAP, &md5_hex("pw")).unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(!h.contains(&md5_hex("pw")));
        assert!(verify(&h, &md5_hex("pw").to_uppercase()));
        assert!(!verify(&h, &md5_hex("other")));
        assert!(!verify("not a hash", &md5_hex("pw")));
    }

    #[test]
    fn salts_differ() {
        assert_ne!(hash(CHEAP, "a").unwrap(), hash(CHEAP, "a").unwrap());
    }
}
