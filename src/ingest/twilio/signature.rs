//! `X-Twilio-Signature` validation: base64(HMAC-SHA1(auth token, URL + sorted POST
//! params)). A websocket upgrade is a GET, so only the URL is signed.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;

type HmacSha1 = Hmac<Sha1>;

pub fn compute(auth_token: &str, url: &str) -> String {
    let mut mac = HmacSha1::new_from_slice(auth_token.as_bytes()).expect("HMAC accepts any key length");
    mac.update(url.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// True when `signature` matches any of the candidate URLs the request may have been
/// signed for (behind a proxy the scheme and port seen by Twilio may differ).
pub fn is_valid(auth_token: &str, signature: &str, candidate_urls: &[String]) -> bool {
    candidate_urls.iter().any(|url| bool::from(compute(auth_token, url).as_bytes().ct_eq(signature.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_twilio_documented_example() {
        // Example from Twilio's webhook security documentation (GET-style, URL only):
        // computed independently with `openssl dgst -sha1 -hmac 12345 -binary | base64`.
        let sig = compute("12345", "https://mycompany.com/myapp.php?foo=1&bar=2");
        assert_eq!(sig, "zYQTYrRWXE7LtzbG4PfP7/bkkGo=");
        assert!(is_valid("12345", &sig, &["wss://x/".into(), "https://mycompany.com/myapp.php?foo=1&bar=2".into()]));
        assert!(!is_valid("12346", &sig, &["https://mycompany.com/myapp.php?foo=1&bar=2".into()]));
    }
}
