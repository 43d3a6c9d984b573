//! SIP digest authentication, server side (RFC 3261 §22, RFC 7616, RFC 8760): the
//! challenge for a `401`, and the check of an `Authorization` header. Pure: the clock
//! and the nonce key come in.
//!
//! Nonces are stateless: `<seconds hex>.<HMAC-SHA256(key, seconds) hex>`, good for
//! [`NONCE_TTL`]; an older one gets a fresh challenge with `stale=true` (the client
//! retries without asking its user). Nonce counts are not tracked, so a captured
//! request can be replayed within the nonce's lifetime: the allow-list still applies,
//! and TLS is the answer to capture.

use hmac::{Hmac, Mac};
use md5::Digest as _;

pub const NONCE_TTL: u64 = 300;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("no Authorization header")]
    Missing,
    #[error("Authorization header is not a digest: {0}")]
    Malformed(&'static str),
    #[error("unknown user")]
    User,
    #[error("wrong realm")]
    Realm,
    #[error("nonce not ours")]
    Nonce,
    #[error("nonce expired")]
    Stale,
    #[error("unsupported algorithm or qop")]
    Unsupported,
    #[error("wrong response (password)")]
    Response,
}

/// A tenant's credentials.
#[derive(Debug, Clone)]
pub struct Credentials<'a> {
    pub realm: &'a str,
    pub user: &'a str,
    pub password: &'a str,
}

fn nonce_mac(key: &[u8], ts: &str) -> String {
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(ts.as_bytes());
    hex(&m.finalize().into_bytes()[..16])
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A nonce minted at `now` (Unix seconds).
pub fn nonce(key: &[u8], now: u64) -> String {
    let ts = format!("{now:x}");
    let mac = nonce_mac(key, &ts);
    format!("{ts}.{mac}")
}

/// The `WWW-Authenticate` value for a 401.
pub fn challenge(realm: &str, key: &[u8], now: u64, stale: bool) -> String {
    let mut c = format!("Digest realm=\"{realm}\", nonce=\"{}\", algorithm=MD5, qop=\"auth\"", nonce(key, now));
    if stale {
        c.push_str(", stale=true");
    }
    c
}

/// The parameters of a `Digest` credentials header (quoted or bare values).
pub fn params(header: &str) -> Result<Vec<(String, String)>, DigestError> {
    let h = header.trim();
    let rest = h
        .get(..6)
        .filter(|s| s.eq_ignore_ascii_case("digest"))
        .map(|_| &h[6..])
        .ok_or(DigestError::Malformed("scheme is not Digest"))?;
    let mut out = Vec::new();
    let mut s = rest.trim_start();
    while !s.is_empty() {
        let eq = s.find('=').ok_or(DigestError::Malformed("parameter without ="))?;
        let name = s[..eq].trim().to_ascii_lowercase();
        if name.is_empty() || name.contains([' ', ',', '"']) {
            return Err(DigestError::Malformed("bad parameter name"));
        }
        s = s[eq + 1..].trim_start();
        let value;
        if let Some(q) = s.strip_prefix('"') {
            let mut v = String::new();
            let mut chars = q.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            v.push(n);
                        }
                    }
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    _ => v.push(c),
                }
            }
            let end = end.ok_or(DigestError::Malformed("unterminated quote"))?;
            value = v;
            s = q[end + 1..].trim_start();
        } else {
            let end = s.find(',').unwrap_or(s.len());
            value = s[..end].trim().to_string();
            s = &s[end..];
        }
        out.push((name, value));
        s = s.trim_start();
        if let Some(r) = s.strip_prefix(',') {
            s = r.trim_start();
        } else if !s.is_empty() {
            return Err(DigestError::Malformed("expected , between parameters"));
        }
    }
    Ok(out)
}

fn md5_hex(s: &str) -> String {
    hex(&md5::Md5::digest(s.as_bytes()))
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest as _;
    hex(&sha2::Sha256::digest(s.as_bytes()))
}

/// Checks `authorization` for a request with `method` at time `now`.
pub fn verify(
    authorization: Option<&str>,
    method: &str,
    creds: &Credentials<'_>,
    key: &[u8],
    now: u64,
) -> Result<(), DigestError> {
    let p = params(authorization.ok_or(DigestError::Missing)?)?;
    let get = |n: &str| p.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
    let need = |n: &'static str| get(n).ok_or(DigestError::Malformed(n));
    if need("username")? != creds.user {
        return Err(DigestError::User);
    }
    if need("realm")? != creds.realm {
        return Err(DigestError::Realm);
    }
    let nonce = need("nonce")?;
    let (ts, mac) = nonce.split_once('.').ok_or(DigestError::Nonce)?;
    let expected = nonce_mac(key, ts);
    // Constant-time enough: both are our own hex of fixed length.
    if mac.len() != expected.len() || !mac.bytes().zip(expected.bytes()).fold(true, |ok, (a, b)| ok & (a == b)) {
        return Err(DigestError::Nonce);
    }
    let minted = u64::from_str_radix(ts, 16).map_err(|_| DigestError::Nonce)?;
    if now.saturating_sub(minted) > NONCE_TTL || minted > now + 5 {
        return Err(DigestError::Stale);
    }
    let h: fn(&str) -> String = match get("algorithm").map(|a| a.to_ascii_uppercase()) {
        None => md5_hex,
        Some(a) if a == "MD5" => md5_hex,
        Some(a) if a == "SHA-256" => sha256_hex,
        Some(_) => return Err(DigestError::Unsupported),
    };
    let uri = need("uri")?;
    let ha1 = h(&format!("{}:{}:{}", creds.user, creds.realm, creds.password));
    let ha2 = h(&format!("{method}:{uri}"));
    let want = match get("qop") {
        None => h(&format!("{ha1}:{nonce}:{ha2}")),
        Some(q) if q.eq_ignore_ascii_case("auth") => {
            h(&format!("{ha1}:{nonce}:{}:{}:auth:{ha2}", need("nc")?, need("cnonce")?))
        }
        Some(_) => return Err(DigestError::Unsupported),
    };
    if need("response")?.eq_ignore_ascii_case(&want) {
        Ok(())
    } else {
        Err(DigestError::Response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
    const CREDS: Credentials<'static> = Credentials { realm: "earshot", user: "sbc", password: "s3cret" };

    /// What a client computes (RFC 2617 §3.2.2).
    fn authorization(nonce: &str, password: &str, qop: bool, alg: &str) -> String {
        let h: fn(&str) -> String = if alg == "SHA-256" { sha256_hex } else { md5_hex };
        let ha1 = h(&format!("sbc:earshot:{password}"));
        let ha2 = h("INVITE:sip:sipco@127.0.0.1:5060");
        if qop {
            let r = h(&format!("{ha1}:{nonce}:00000001:abc:auth:{ha2}"));
            format!("Digest username=\"sbc\", realm=\"earshot\", nonce=\"{nonce}\", uri=\"sip:sipco@127.0.0.1:5060\", response=\"{r}\", algorithm={alg}, cnonce=\"abc\", qop=auth, nc=00000001")
        } else {
            let r = h(&format!("{ha1}:{nonce}:{ha2}"));
            format!("Digest username=\"sbc\",realm=\"earshot\",nonce=\"{nonce}\",uri=\"sip:sipco@127.0.0.1:5060\",response=\"{r}\"")
        }
    }

    #[test]
    fn rfc_2617_example_response() {
        // RFC 2617 §3.5 (HTTP, but the same arithmetic).
        let ha1 = md5_hex("Mufasa:testrealm@host.com:Circle Of Life");
        let ha2 = md5_hex("GET:/dir/index.html");
        let r = md5_hex(&format!("{ha1}:dcd98b7102dd2f0e8b11d0f600bfb0c093:00000001:0a4f113b:auth:{ha2}"));
        assert_eq!(r, "6629fae49393a05397450978507c4ef1");
    }

    #[test]
    fn good_credentials_pass_and_each_fault_is_named() {
        let n = nonce(KEY, 1_000_000);
        for (qop, alg) in [(true, "MD5"), (false, "MD5"), (true, "SHA-256")] {
            assert_eq!(
                verify(Some(&authorization(&n, "s3cret", qop, alg)), "INVITE", &CREDS, KEY, 1_000_010),
                Ok(()),
                "{qop} {alg}"
            );
        }
        let good = authorization(&n, "s3cret", true, "MD5");
        assert_eq!(verify(None, "INVITE", &CREDS, KEY, 1_000_010), Err(DigestError::Missing));
        assert_eq!(
            verify(Some(&authorization(&n, "guess", true, "MD5")), "INVITE", &CREDS, KEY, 1_000_010),
            Err(DigestError::Response)
        );
        assert_eq!(
            verify(Some(&good), "BYE", &CREDS, KEY, 1_000_010),
            Err(DigestError::Response),
            "the method is signed"
        );
        assert_eq!(verify(Some(&good), "INVITE", &CREDS, KEY, 1_000_000 + NONCE_TTL + 1), Err(DigestError::Stale));
        assert_eq!(verify(Some(&good), "INVITE", &CREDS, b"another key", 1_000_010), Err(DigestError::Nonce));
        let forged = good.replace(&n, &format!("{:x}.{}", 2_000_000u64, &n[n.find('.').unwrap() + 1..]));
        assert_eq!(
            verify(Some(&forged), "INVITE", &CREDS, KEY, 2_000_000),
            Err(DigestError::Nonce),
            "a fresh timestamp needs a fresh MAC"
        );
        assert_eq!(
            verify(Some(&good.replace("username=\"sbc\"", "username=\"x\"")), "INVITE", &CREDS, KEY, 1_000_010),
            Err(DigestError::User)
        );
        assert_eq!(
            verify(Some(&good.replace("algorithm=MD5", "algorithm=SHA-512-256")), "INVITE", &CREDS, KEY, 1_000_010),
            Err(DigestError::Unsupported)
        );
        assert!(matches!(
            verify(Some("Basic c2JjOnMzY3JldA=="), "INVITE", &CREDS, KEY, 0),
            Err(DigestError::Malformed(_))
        ));
        assert!(matches!(
            verify(Some("Digest username=\"sbc"), "INVITE", &CREDS, KEY, 0),
            Err(DigestError::Malformed(_))
        ));
    }

    #[test]
    fn params_handle_quotes_escapes_and_bare_values() {
        let p = params(r#"digest a="x, y", b=tok , c="q\"uote""#).unwrap();
        assert_eq!(p, vec![("a".into(), "x, y".into()), ("b".into(), "tok".into()), ("c".into(), "q\"uote".into())]);
        assert!(params("Digest a").is_err());
        assert!(params("Digest a=\"x\" b=y").is_err());
        let c = challenge("earshot", KEY, 5, true);
        assert!(c.starts_with("Digest realm=\"earshot\", nonce=\"5.") && c.ends_with("stale=true"), "{c}");
    }
}
