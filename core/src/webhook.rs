//! Completion webhooks, signed the Standard Webhooks way: headers
//! `webhook-id`, `webhook-timestamp` (seconds) and `webhook-signature`
//! (`v1,` + base64 HMAC-SHA256 over `id.timestamp.body`).

use crate::time::Millis;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// A signing secret. `whsec_`-prefixed secrets are base64 after the prefix,
/// as Standard Webhooks libraries expect; anything else is used as raw bytes.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// Parses a configured secret.
    pub fn parse(text: &str) -> Self {
        let text = text.trim();
        match text.strip_prefix("whsec_").map(|b| STANDARD.decode(b)) {
            Some(Ok(key)) => Self(key),
            _ => Self(text.as_bytes().to_vec()),
        }
    }

    /// A new random secret in `whsec_` form, from 32 bytes of `entropy`.
    pub fn encode(key: &[u8]) -> String {
        format!("whsec_{}", STANDARD.encode(key))
    }

    /// The `webhook-signature` header value for a message.
    pub fn sign(&self, msg_id: &str, timestamp_s: i64, body: &[u8]) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC accepts keys of any length");
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp_s.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }

    /// Checks a `webhook-signature` header (any of its space-separated signatures).
    pub fn verify(&self, msg_id: &str, timestamp_s: i64, body: &[u8], header: &str) -> bool {
        let want = self.sign(msg_id, timestamp_s, body);
        header
            .split(' ')
            .any(|sig| constant_time_eq(sig.as_bytes(), want.as_bytes()))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Delivery attempts before giving up.
pub const MAX_ATTEMPTS: u32 = 8;

/// When to try again after failed attempt number `attempt` (1-based), or
/// `None` to give up: 1 s, 2 s, 4 s ... capped at 5 minutes.
pub fn next_attempt(attempt: u32, now: Millis) -> Option<Millis> {
    (attempt < MAX_ATTEMPTS)
        .then(|| now + crate::backoff::delay_ms(attempt, 1000, 300_000) as Millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_standard_webhooks_example() {
        // The example from the Standard Webhooks specification.
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let body = br#"{"test": 2432232314}"#;
        let sig = secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(secret.verify(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            body,
            &format!("v1,bogus {sig}")
        ));
        assert!(!secret.verify("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265331, body, &sig));
    }

    #[test]
    fn backoff_doubles_then_gives_up() {
        assert_eq!(next_attempt(1, 0), Some(1000));
        assert_eq!(next_attempt(2, 0), Some(2000));
        assert_eq!(next_attempt(7, 0), Some(64_000));
        assert_eq!(next_attempt(MAX_ATTEMPTS, 0), None);
    }
}
