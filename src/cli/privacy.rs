//! `earshot erase`, `export`, `hold` and `audit`: a data subject's rights, legal hold
//! and the tenant's audit log; each action is itself audited.

use std::path::PathBuf;

use anyhow::Context;

use super::{open_store, operator_audit, parse_at, run_async};

pub fn erase(config: Option<PathBuf>, tenant: String, subject: String) -> anyhow::Result<()> {
    let (_, store) = open_store(config)?;
    let receipt = run_async(async move {
        let r = earshot::store::privacy::erase_subject(&store, &tenant, &subject, chrono::Utc::now()).await?;
        let h = store.keyed_hash("audit-subject", &tenant, &earshot::store::privacy::normalize_subject(&subject))?;
        operator_audit(
            &store,
            &tenant,
            "erasure",
            Some(format!("subject:{}", &h[..32])),
            serde_json::json!({ "erased_calls": r.erased.len(), "held_calls": r.held.len() }),
        )
        .await?;
        Ok(r)
    })?;
    println!("{}", serde_json::to_string_pretty(&receipt)?);
    Ok(())
}

pub fn export(config: Option<PathBuf>, tenant: String, subject: Option<String>, out: PathBuf) -> anyhow::Result<()> {
    let (_, store) = open_store(config)?;
    let out2 = out.clone();
    let summary = run_async(async move {
        let calls = match &subject {
            Some(s) => earshot::store::privacy::subject_calls(&store, &tenant, s).await?,
            None => store.list_calls(&tenant).await?,
        };
        let s = earshot::store::privacy::build_export(&store, &tenant, &calls, &out2, |done, total| {
            eprint!("\r{done}/{total} calls")
        })
        .await?;
        eprintln!();
        operator_audit(&store, &tenant, "export.cli", None, serde_json::json!({ "calls": s.calls, "files": s.files }))
            .await?;
        Ok(s)
    })?;
    println!(
        "{}: {} calls, {} files, {} bytes (decrypted: keep it safe)",
        out.display(),
        summary.calls,
        summary.files,
        summary.bytes
    );
    Ok(())
}

pub fn hold(config: Option<PathBuf>, call_id: String, reason: Option<String>, release: bool) -> anyhow::Result<()> {
    let (_, store) = open_store(config)?;
    let id = earshot::call::CallId::parse(&call_id).with_context(|| format!("{call_id:?} is not a call id"))?;
    let msg = run_async(async move {
        let call = store.find_call(id).await?;
        let target = earshot::store::privacy::call_ref(&store, &call.tenant, id).ok();
        if release {
            let (was, erased) = earshot::store::privacy::release_hold(&store, &call).await?;
            operator_audit(
                &store,
                &call.tenant,
                "hold.release",
                target,
                serde_json::json!({ "was_held": was, "pending_erasure_ran": erased.is_some() }),
            )
            .await?;
            Ok(format!("released (was held: {was}){}", if erased.is_some() { "; its pending erasure ran" } else { "" }))
        } else {
            let reason = reason.unwrap_or_default();
            store.hold(&call, &reason, chrono::Utc::now()).await?;
            operator_audit(&store, &call.tenant, "hold.set", target, serde_json::json!({ "reason": reason })).await?;
            Ok("on legal hold".to_string())
        }
    })?;
    println!("call {call_id}: {msg}");
    Ok(())
}

pub fn audit_log(
    config: Option<PathBuf>,
    tenant: String,
    since: Option<String>,
    action: Option<String>,
) -> anyhow::Result<()> {
    let (_, store) = open_store(config)?;
    let from = match since {
        Some(s) => parse_at(&s)?,
        None => chrono::Utc::now() - chrono::Duration::days(earshot::store::privacy::AUDIT_RETENTION_DAYS),
    };
    let entries = run_async(async move {
        let e = earshot::store::privacy::read_audit(
            &store,
            &tenant,
            from,
            chrono::Utc::now() + chrono::Duration::minutes(1),
            action.as_deref(),
        )
        .await?;
        operator_audit(&store, &tenant, "audit.read", None, serde_json::json!({ "returned": e.len() })).await?;
        Ok(e)
    })?;
    for e in entries {
        println!("{}", serde_json::to_string(&e)?);
    }
    Ok(())
}
