//! Fork authentication helpers: Bearer / Basic credentials checked against a tenant's
//! fork secret in constant time.

use axum::http::HeaderMap;
use base64::Engine;
use subtle::ConstantTimeEq;

use crate::config::TenantConfig;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    Bearer(String),
    Basic { user: String, password: String },
}

pub fn from_headers(headers: &HeaderMap) -> Option<Credentials> {
    let value = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(Credentials::Bearer(rest.trim().to_string()));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD.decode(rest.trim()).ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (user, password) = text.split_once(':')?;
        return Some(Credentials::Basic { user: user.to_string(), password: password.to_string() });
    }
    None
}

pub fn secret_matches(tenant: &TenantConfig, presented: &str) -> bool {
    match tenant.fork_secret.as_deref() {
        Some(secret) if !secret.is_empty() => bool::from(secret.as_bytes().ct_eq(presented.as_bytes())),
        _ => false,
    }
}

impl Credentials {
    pub fn secret(&self) -> &str {
        match self {
            Credentials::Bearer(s) => s,
            Credentials::Basic { password, .. } => password,
        }
    }

    /// Basic auth's user name may name the tenant.
    pub fn tenant_hint(&self) -> Option<&str> {
        match self {
            Credentials::Basic { user, .. } if !user.is_empty() => Some(user),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_and_basic() {
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer abc".parse().unwrap());
        assert_eq!(from_headers(&h), Some(Credentials::Bearer("abc".into())));
        h.insert("authorization", "Basic YWNtZTpzM2NyZXQ=".parse().unwrap());
        assert_eq!(from_headers(&h), Some(Credentials::Basic { user: "acme".into(), password: "s3cret".into() }));
        h.insert("authorization", "Basic !!!".parse().unwrap());
        assert_eq!(from_headers(&h), None);
    }
}
