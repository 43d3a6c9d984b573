//! What one operation of the API is: method, path, roles, and the handler. The table of
//! them is in `routes`; the token check (`auth`) reads the entry the router attached.

use axum::routing::{MethodFilter, MethodRouter};

use crate::app::AppState;
use crate::live::token::TokenRole;

/// One operation of the API.
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    /// Roles allowed; empty: no token (signed link or public document).
    pub roles: &'static [TokenRole],
    pub ok: u16,
    /// The handler, on this route's method.
    pub handler: fn(MethodFilter) -> MethodRouter<AppState>,
}
