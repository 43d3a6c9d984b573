//! The route table: each operation's method, path, roles and handler, from which the
//! router and the OpenAPI document (`/v1/openapi.json`) are both built.

use axum::http::StatusCode;
use axum::routing::{on, MethodFilter};
use axum::{Extension, Router};
use serde_json::{json, Value};

use super::audit::get_audit;
use super::calls::{delete_call, get_call, get_file, get_live_calls, get_recording, get_transcript, list_calls};
use super::erasure::{delete_tenant_deletion, get_tenant_deletion, post_erasure, post_tenant_deletion};
use super::exports::{download_export, get_export, post_export};
use super::holds::{delete_hold, get_retention, put_hold, tenant_hold};
use super::json_ok;
use super::route::Route;
use crate::app::AppState;
use crate::live::token::TokenRole;

use TokenRole::{Admin, Auditor, Manager, Rep};

const READERS: &[TokenRole] = &[Admin, Manager, Rep];

pub const API: &[Route] = &[
    Route {
        method: "GET",
        path: "/v1/calls",
        summary: "List calls (filters: from, to, campaign, rep, participant; cursor, limit)",
        roles: READERS,
        ok: 200,
        handler: |f| on(f, list_calls),
    },
    Route {
        method: "GET",
        path: "/v1/calls/{id}",
        summary: "A call's manifest",
        roles: READERS,
        ok: 200,
        handler: |f| on(f, get_call),
    },
    Route {
        method: "DELETE",
        path: "/v1/calls/{id}",
        summary: "Erase every object of a call",
        roles: &[Admin],
        ok: 200,
        handler: |f| on(f, delete_call),
    },
    Route {
        method: "GET",
        path: "/v1/calls/{id}/recording",
        summary: "The recording, decrypted (WAV; HTTP Range)",
        roles: READERS,
        ok: 200,
        handler: |f| on(f, get_recording),
    },
    Route {
        method: "GET",
        path: "/v1/calls/{id}/transcript",
        summary: "The transcript (JSON, or text with ?format=txt)",
        roles: READERS,
        ok: 200,
        handler: |f| on(f, get_transcript),
    },
    Route {
        method: "GET",
        path: "/v1/calls/{id}/hints",
        summary: "Coaching hints raised during the call",
        roles: READERS,
        ok: 200,
        handler: |f| on(f, |s, c, i, p| get_file(s, c, i, p, "hints.json")),
    },
    Route {
        method: "GET",
        path: "/v1/calls/{id}/scorecard",
        summary: "The call's scorecard",
        roles: READERS,
        ok: 200,
        handler: |f| on(f, |s, c, i, p| get_file(s, c, i, p, "scorecard.json")),
    },
    Route {
        method: "PUT",
        path: "/v1/calls/{id}/hold",
        summary: "Put a call under legal hold",
        roles: &[Admin],
        ok: 200,
        handler: |f| on(f, put_hold),
    },
    Route {
        method: "DELETE",
        path: "/v1/calls/{id}/hold",
        summary: "Release a call's hold (a pending erasure then runs)",
        roles: &[Admin],
        ok: 200,
        handler: |f| on(f, delete_hold),
    },
    Route {
        method: "PUT",
        path: "/v1/tenant/hold",
        summary: "Legal hold on every call of the tenant",
        roles: &[Admin],
        ok: 200,
        handler: |f| on(f, |s, c, p| tenant_hold(s, c, p, true)),
    },
    Route {
        method: "DELETE",
        path: "/v1/tenant/hold",
        summary: "Release the tenant-wide hold",
        roles: &[Admin],
        ok: 200,
        handler: |f| on(f, |s, c, p| tenant_hold(s, c, p, false)),
    },
    Route {
        method: "GET",
        path: "/v1/retention",
        summary: "Effective retention policies",
        roles: &[Admin, Manager],
        ok: 200,
        handler: |f| on(f, get_retention),
    },
    Route {
        method: "POST",
        path: "/v1/erasure",
        summary: "Erase every call of a data subject; returns a receipt",
        roles: &[Admin],
        ok: 200,
        handler: |f| on(f, post_erasure),
    },
    Route {
        method: "POST",
        path: "/v1/exports",
        summary: "Start an export (a subject, or the whole tenant)",
        roles: &[Admin],
        ok: 202,
        handler: |f| on(f, post_export),
    },
    Route {
        method: "GET",
        path: "/v1/exports/{id}",
        summary: "Export progress; the signed download URL when done",
        roles: &[Admin],
        ok: 200,
        handler: |f| on(f, get_export),
    },
    Route {
        method: "GET",
        path: "/v1/exports/{id}/download",
        summary: "Download an export (signed link, valid 24 hours; no token)",
        roles: &[],
        ok: 200,
        handler: |f| on(f, download_export),
    },
    Route {
        method: "POST",
        path: "/v1/tenant/deletion",
        summary: "Delete the tenant after a 7-day grace period",
        roles: &[Admin],
        ok: 202,
        handler: |f| on(f, post_tenant_deletion),
    },
    Route {
        method: "GET",
        path: "/v1/tenant/deletion",
        summary: "A pending tenant deletion",
        roles: &[Admin],
        ok: 200,
        handler: |f| on(f, get_tenant_deletion),
    },
    Route {
        method: "DELETE",
        path: "/v1/tenant/deletion",
        summary: "Cancel a pending tenant deletion",
        roles: &[Admin],
        ok: 200,
        handler: |f| on(f, delete_tenant_deletion),
    },
    Route {
        method: "GET",
        path: "/v1/audit",
        summary: "The audit log (filters: from, to, action)",
        roles: &[Admin, Auditor],
        ok: 200,
        handler: |f| on(f, get_audit),
    },
    Route {
        method: "GET",
        path: "/v1/live/calls",
        summary: "Live calls of the tenant on every node (from the Redis registry; this node's alone without Redis)",
        roles: &[Admin, Manager],
        ok: 200,
        handler: |f| on(f, get_live_calls),
    },
    Route {
        method: "GET",
        path: "/v1/openapi.json",
        summary: "This document",
        roles: &[],
        ok: 200,
        handler: |f| on(f, || async { json_ok(StatusCode::OK, openapi()) }),
    },
];

/// Every route of the table, each carrying its table entry: the handlers' `Authorised`
/// extractor checks the token against the roles of the entry the request was routed by.
pub fn router() -> Router<AppState> {
    let mut r = Router::new();
    for route in API {
        r = r.route(route.path, (route.handler)(filter(route.method)).route_layer(Extension(route)));
    }
    r
}

fn filter(m: &str) -> MethodFilter {
    match m {
        "GET" => MethodFilter::GET,
        "PUT" => MethodFilter::PUT,
        "POST" => MethodFilter::POST,
        "DELETE" => MethodFilter::DELETE,
        other => panic!("method {other} not supported"),
    }
}

/// The OpenAPI 3.1 document, from the route table.
pub fn openapi() -> Value {
    let mut paths = serde_json::Map::new();
    for r in API {
        let params: Vec<Value> = r
            .path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
            .collect();
        let mut responses = serde_json::Map::new();
        responses.insert(r.ok.to_string(), json!({ "description": "OK" }));
        let problem = |d: &str| json!({ "description": d, "content": { "application/problem+json": { "schema": { "$ref": "#/components/schemas/Problem" } } } });
        if !r.roles.is_empty() {
            responses.insert("401".into(), problem("No or bad token"));
            responses.insert("403".into(), problem("The token's role may not do this"));
        }
        responses.insert("404".into(), problem("No such resource in the token's tenant"));
        let mut op = json!({
            "summary": r.summary,
            "operationId": format!("{}{}", r.method.to_lowercase(), r.path.replace(['/', '{', '}', '.'], "_")),
            "responses": responses,
            "x-roles": r.roles.iter().map(|x| serde_json::to_value(x).unwrap()).collect::<Vec<_>>(),
        });
        if !params.is_empty() {
            op["parameters"] = json!(params);
        }
        if r.roles.is_empty() {
            op["security"] = json!([]);
        }
        let entry = paths.entry(r.path.to_string()).or_insert_with(|| json!({}));
        entry[r.method.to_lowercase()] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": "Earshot admin API", "version": env!("CARGO_PKG_VERSION") },
        "servers": [{ "url": "/" }],
        "security": [{ "bearer": [] }],
        "paths": paths,
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT" } },
            "schemas": { "Problem": { "type": "object", "properties": {
                "type": { "type": "string" }, "title": { "type": "string" }, "status": { "type": "integer" }, "detail": { "type": "string" } } } }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_lists_every_route_once() {
        let doc = openapi();
        let n: usize = doc["paths"].as_object().unwrap().values().map(|p| p.as_object().unwrap().len()).sum();
        assert_eq!(n, API.len());
    }
}
