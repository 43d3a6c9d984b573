//! Tokens for people and systems (../docs/contracts.md): JWT HS256 signed with the
//! tenant's `signing_secret`, header `kid` = tenant id, claims `sub`, `role`, `exp`,
//! `iat` and optionally `call` (scope to one call). `earshot token issue` mints them.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::config::Config;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenRole {
    /// Own calls (`rep_id` = `sub`).
    Rep,
    /// The tenant's calls.
    Manager,
    /// Everything of the tenant.
    Admin,
    /// The audit log.
    Auditor,
    /// May push media for one call (WHIP from a browser).
    Publisher,
}

/// A role name that is not one of the five.
#[derive(Debug, Error)]
#[error("unknown role {0:?} (rep, manager, admin, auditor, publisher)")]
pub struct UnknownRole(pub String);

impl std::str::FromStr for TokenRole {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, UnknownRole> {
        match s {
            "rep" => Ok(Self::Rep),
            "manager" => Ok(Self::Manager),
            "admin" => Ok(Self::Admin),
            "auditor" => Ok(Self::Auditor),
            "publisher" => Ok(Self::Publisher),
            other => Err(UnknownRole(other.to_string())),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: TokenRole,
    pub exp: u64,
    pub iat: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<String>,
}

/// A checked token: who, of which tenant, may do what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant: String,
    pub claims: Claims,
}

#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("token has no tenant (`kid` header)")]
    NoTenant,
    /// Unknown tenant, tenant without a signing secret, or a bad signature: one answer
    /// for all three, so a token cannot probe which tenants exist.
    #[error("invalid token")]
    Invalid,
    #[error("token expired")]
    Expired,
    #[error("tenant {0:?} has no signing_secret configured")]
    NoSecret(String),
    #[error("ttl must be between 1 s and 366 days")]
    BadTtl,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Mints a token for `tenant` (which must have a signing secret).
pub fn issue(
    config: &Config,
    tenant: &str,
    sub: &str,
    role: TokenRole,
    ttl: Duration,
    call: Option<String>,
) -> Result<String, TokenError> {
    if ttl < Duration::from_secs(1) || ttl > Duration::from_secs(366 * 86_400) {
        return Err(TokenError::BadTtl);
    }
    let secret = config
        .tenant(tenant)
        .and_then(|t| t.signing_secret.as_deref())
        .ok_or_else(|| TokenError::NoSecret(tenant.to_string()))?;
    let iat = now_secs();
    let claims = Claims { sub: sub.to_string(), role, exp: iat + ttl.as_secs(), iat, call };
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(tenant.to_string());
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(secret.as_bytes()))
        .map_err(|_| TokenError::Malformed)
}

/// Checks signature, algorithm (HS256 only) and expiry.
pub fn verify(config: &Config, token: &str) -> Result<Principal, TokenError> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
    if header.alg != Algorithm::HS256 {
        return Err(TokenError::Invalid);
    }
    let tenant = header.kid.ok_or(TokenError::NoTenant)?;
    let secret = config.tenant(&tenant).and_then(|t| t.signing_secret.as_deref()).ok_or(TokenError::Invalid)?;
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 30;
    validation.validate_aud = false;
    validation.set_required_spec_claims(&["exp", "sub"]);
    let data = jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(secret.as_bytes()), &validation)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
            jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenError::Invalid,
            _ => TokenError::Malformed,
        })?;
    Ok(Principal { tenant, claims: data.claims })
}

impl Principal {
    /// Whether this principal may watch a call of its tenant with this rep / id.
    pub fn may_watch(&self, tenant: &str, call_id: &str, rep_id: Option<&str>) -> bool {
        if tenant != self.tenant {
            return false;
        }
        if let Some(scope) = &self.claims.call {
            if scope != call_id {
                return false;
            }
        }
        match self.claims.role {
            TokenRole::Manager | TokenRole::Admin => true,
            TokenRole::Rep => rep_id == Some(self.claims.sub.as_str()),
            TokenRole::Auditor | TokenRole::Publisher => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        let text = r#"
[[tenants]]
id = "acme"
fork_secret = "0123456789abcdef0123"
signing_secret = "acme-signing-secret-0123456789abcdef"
[[tenants]]
id = "globex"
fork_secret = "0123456789abcdef0123"
signing_secret = "globex-signing-secret-0123456789abcdef"
[[tenants]]
id = "nosign"
fork_secret = "0123456789abcdef0123"
"#;
        Config::from_toml_with_env(text, std::path::Path::new("t.toml"), std::iter::empty()).unwrap()
    }

    #[test]
    fn round_trip_and_scope() {
        let c = config();
        let t = issue(&c, "acme", "rep-7", TokenRole::Rep, Duration::from_secs(3600), None).unwrap();
        let p = verify(&c, &t).unwrap();
        assert_eq!(p.tenant, "acme");
        assert_eq!(p.claims.sub, "rep-7");
        assert_eq!(p.claims.role, TokenRole::Rep);
        assert!(p.may_watch("acme", "c1", Some("rep-7")));
        assert!(!p.may_watch("acme", "c1", Some("rep-8")));
        assert!(!p.may_watch("acme", "c1", None));
        assert!(!p.may_watch("globex", "c1", Some("rep-7")));
        let m =
            verify(&c, &issue(&c, "acme", "boss", TokenRole::Manager, Duration::from_secs(60), None).unwrap()).unwrap();
        assert!(m.may_watch("acme", "c1", Some("anyone")) && m.may_watch("acme", "c2", None));
        assert!(!m.may_watch("globex", "c1", None));
        let scoped = verify(
            &c,
            &issue(&c, "acme", "boss", TokenRole::Manager, Duration::from_secs(60), Some("c1".into())).unwrap(),
        )
        .unwrap();
        assert!(scoped.may_watch("acme", "c1", None) && !scoped.may_watch("acme", "c2", None));
        let publ =
            verify(&c, &issue(&c, "acme", "dialer", TokenRole::Publisher, Duration::from_secs(60), None).unwrap())
                .unwrap();
        assert!(!publ.may_watch("acme", "c1", Some("dialer")));
    }

    #[test]
    fn rejects_forgeries_expiry_and_unknown_tenants() {
        let c = config();
        let t = issue(&c, "acme", "rep-7", TokenRole::Rep, Duration::from_secs(3600), None).unwrap();
        // Re-signed with another tenant's key but claiming acme.
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("acme".into());
        let claims = verify(&c, &t).unwrap().claims;
        let forged =
            jsonwebtoken::encode(&h, &claims, &EncodingKey::from_secret(b"globex-signing-secret-0123456789abcdef"))
                .unwrap();
        assert_eq!(verify(&c, &forged), Err(TokenError::Invalid));
        // Tampered payload.
        let parts: Vec<&str> = t.split('.').collect();
        let tampered = format!("{}.{}x.{}", parts[0], parts[1], parts[2]);
        assert!(verify(&c, &tampered).is_err());
        // Expired (beyond the 30 s leeway).
        let old = Claims { exp: now_secs() - 120, iat: now_secs() - 200, ..claims.clone() };
        let expired =
            jsonwebtoken::encode(&h, &old, &EncodingKey::from_secret(b"acme-signing-secret-0123456789abcdef")).unwrap();
        assert_eq!(verify(&c, &expired), Err(TokenError::Expired));
        // alg=none and unknown tenants.
        let none = format!("{}.{}.", base64_url(r#"{"alg":"none","kid":"acme"}"#), parts[1]);
        assert!(verify(&c, &none).is_err());
        let mut h2 = h.clone();
        h2.kid = Some("nosign".into());
        let t2 = jsonwebtoken::encode(&h2, &claims, &EncodingKey::from_secret(b"whatever-whatever-whatever-whatever"))
            .unwrap();
        assert_eq!(verify(&c, &t2), Err(TokenError::Invalid));
        h2.kid = None;
        let t3 = jsonwebtoken::encode(&h2, &claims, &EncodingKey::from_secret(b"x")).unwrap();
        assert_eq!(verify(&c, &t3), Err(TokenError::NoTenant));
        assert_eq!(verify(&c, "garbage"), Err(TokenError::Malformed));
        assert_eq!(
            issue(&c, "nosign", "x", TokenRole::Rep, Duration::from_secs(5), None),
            Err(TokenError::NoSecret("nosign".into()))
        );
        assert_eq!(issue(&c, "acme", "x", TokenRole::Rep, Duration::ZERO, None), Err(TokenError::BadTtl));
    }

    fn base64_url(s: &str) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    }
}
