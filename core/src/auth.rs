//! Tenants and API keys.
//!
//! A key is `psk_<id>_<secret>`: `id` (16 hex digits) names it in listings
//! and revocations, `secret` is 32 random bytes (base64url). The catalog
//! keeps only the SHA-256 of the whole key: keys are long random strings,
//! so a plain hash is as good as a slow password hash here, and it lets a
//! request find its key with one indexed lookup.

use crate::time::Millis;
use base64::Engine;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// The tenant of batches that no key uploaded (recorded before keys
/// existed, or an `UploadBatch` applied without `spec.owner`).
pub const DEFAULT_TENANT: &str = "default";

/// What a key lets its holder do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Its own tenant's batches and images.
    Tenant,
    /// Every tenant's, and the audit sample.
    Admin,
}

impl Role {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Tenant => "tenant",
            Role::Admin => "admin",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "tenant" => Some(Role::Tenant),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// An API key as the catalog keeps it (never the key itself).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ApiKey {
    /// The key's public id.
    pub id: String,
    /// The tenant it acts for.
    pub tenant: String,
    /// What it may do.
    pub role: Role,
    /// A note for whoever lists keys.
    pub label: String,
    /// When it was created (ms).
    pub created_at: Millis,
    /// When it was revoked (ms); a revoked key is refused.
    pub revoked_at: Option<Millis>,
}

/// Who is calling, once the key checked out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The tenant.
    pub tenant: String,
    /// Whether the key is an admin key.
    pub admin: bool,
    /// The key's id.
    pub key_id: String,
}

impl Caller {
    /// Whether the caller may see what `owner` owns.
    pub fn may_see(&self, owner: &str) -> bool {
        self.admin || self.tenant == owner
    }

    /// The tenant a search is restricted to; `None` for admins.
    pub fn scope(&self) -> Option<&str> {
        (!self.admin).then_some(self.tenant.as_str())
    }
}

/// A freshly generated key: the secret to hand out once, and its record.
pub struct NewKey {
    /// The whole key, shown once.
    pub secret: String,
    /// SHA-256 of `secret`, what the catalog stores.
    pub hash: String,
    /// The record.
    pub key: ApiKey,
}

/// Generates a key for `tenant`.
pub fn generate(tenant: &str, role: Role, label: &str, now: Millis) -> crate::Result<NewKey> {
    check_tenant(tenant)?;
    let mut random = [0u8; 40];
    getrandom::fill(&mut random).map_err(|e| crate::Error::Io(std::io::Error::other(e)))?;
    let id = hex::encode(&random[..8]);
    let secret = format!(
        "psk_{id}_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&random[8..])
    );
    Ok(NewKey {
        hash: hash(&secret),
        secret,
        key: ApiKey {
            id,
            tenant: tenant.to_string(),
            role,
            label: label.to_string(),
            created_at: now,
            revoked_at: None,
        },
    })
}

/// The stored form of a key.
pub fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.trim().as_bytes()))
}

/// Whether `s` has the shape of a key (checked before any lookup).
pub fn looks_like_key(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("psk_") else {
        return false;
    };
    let Some((id, secret)) = rest.split_once('_') else {
        return false;
    };
    id.len() == 16
        && id.bytes().all(|b| b.is_ascii_hexdigit())
        && (40..=64).contains(&secret.len())
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Tenant names: 1 to 63 characters of `a-z`, `0-9`, `-`, `_`, `.`,
/// starting with a letter or digit (they go into blob keys and labels).
pub fn check_tenant(tenant: &str) -> crate::Result<()> {
    let ok = !tenant.is_empty()
        && tenant.len() <= 63
        && tenant.as_bytes()[0].is_ascii_alphanumeric()
        && tenant
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(crate::Error::Invalid(format!(
            "tenant {tenant:?}: use 1 to 63 characters of a-z, 0-9, '-', '_' and '.', starting with a letter or digit"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_the_documented_shape_and_differ() {
        let a = generate("acme", Role::Tenant, "ci", 1).unwrap();
        let b = generate("acme", Role::Tenant, "ci", 1).unwrap();
        assert!(looks_like_key(&a.secret), "{}", a.secret);
        assert!(a.secret.starts_with(&format!("psk_{}_", a.key.id)));
        assert_ne!(a.secret, b.secret);
        assert_ne!(a.key.id, b.key.id);
        assert_eq!(a.hash, hash(&a.secret));
        assert_eq!(a.hash.len(), 64);
        assert!(!a.hash.contains(&a.secret));
    }

    #[test]
    fn malformed_keys_and_tenants_are_refused() {
        for k in [
            "",
            "psk_",
            "Bearer x",
            "psk_0123456789abcdef_short",
            "psk_xyz_0000000000000000000000000000000000000000000",
        ] {
            assert!(!looks_like_key(k), "{k}");
        }
        for t in ["", "Acme", "-x", "a/b", "a b", &"x".repeat(64)] {
            assert!(check_tenant(t).is_err(), "{t}");
        }
        for t in ["acme", "team-7", "a.b_c", "0"] {
            check_tenant(t).unwrap();
        }
    }
}
