//! Legal holds (per call and per tenant, under `.meta/holds/`) and tombstones (calls
//! deleted for good, under `.meta/tombstones/`, named by a keyed hash of the call id).

use std::collections::HashSet;

use hmac::{Hmac, Mac};
use object_store::path::Path as ObjPath;
use object_store::{ObjectStoreExt, PutPayload};
use sha2::Sha256;

use crate::call::CallId;
use crate::store::objects::{CallRef, StorageError, Store, META};

impl Store {
    /// A keyed hash (HMAC-SHA256 with the keyring's tombstone key) naming something
    /// without revealing it: tombstones, the subject index, call references in the audit log.
    pub fn keyed_hash(&self, purpose: &str, tenant: &str, value: &str) -> Result<String, StorageError> {
        let key = self.keyring()?.tombstone_key().ok_or_else(|| StorageError::Keyring {
            path: self.keys.path().into(),
            detail: "no tombstone_key".into(),
        })?;
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key.0).expect("any key length");
        mac.update(purpose.as_bytes());
        mac.update(b"\0");
        mac.update(tenant.as_bytes());
        mac.update(b"/");
        mac.update(value.as_bytes());
        Ok(mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect())
    }

    fn tombstone_path(&self, call: &CallRef) -> Result<ObjPath, StorageError> {
        let hex = self.keyed_hash("tombstone", &call.tenant, &call.call_id.to_string())?;
        Ok(ObjPath::from(format!("{META}/tombstones/{}/{hex}", call.tenant)))
    }

    /// Legal hold on every call of a tenant (set through the admin API), besides the
    /// config's `legal_hold`.
    pub async fn set_tenant_hold(
        &self,
        tenant: &str,
        on: bool,
        reason: &str,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), StorageError> {
        let rel = format!("holds/{tenant}/tenant");
        if on {
            let body = serde_json::json!({ "reason": reason, "at": at });
            self.put_meta(tenant, &rel, body.to_string().as_bytes()).await
        } else {
            self.delete_meta(&rel).await
        }
    }

    pub async fn tenant_hold(&self, tenant: &str) -> Result<bool, StorageError> {
        self.exists_meta(&format!("holds/{tenant}/tenant")).await
    }

    pub async fn is_held(&self, call: &CallRef) -> Result<bool, StorageError> {
        Ok(self.exists_meta(&format!("holds/{}/{}", call.tenant, call.call_id)).await?
            || self.tenant_hold(&call.tenant).await?)
    }

    /// Marks a call deleted for good: uploads and jobs that come later drop it.
    pub async fn tombstone(&self, call: &CallRef) -> Result<(), StorageError> {
        let path = self.tombstone_path(call)?;
        self.backend.put(&path, PutPayload::from_static(b"")).await?;
        Ok(())
    }

    pub async fn is_tombstoned(&self, call: &CallRef) -> Result<bool, StorageError> {
        match self.backend.head(&self.tombstone_path(call)?).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    fn hold_path(call: &CallRef) -> ObjPath {
        ObjPath::from(format!("{META}/holds/{}/{}", call.tenant, call.call_id))
    }

    /// Puts a call under legal hold (nothing of it is deleted until released).
    pub async fn hold(
        &self,
        call: &CallRef,
        reason: &str,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), StorageError> {
        let body = serde_json::json!({ "reason": reason, "at": at });
        self.put_encrypted(&call.tenant, &Self::hold_path(call), body.to_string().as_bytes()).await?;
        Ok(())
    }

    pub async fn release(&self, call: &CallRef) -> Result<bool, StorageError> {
        let path = Self::hold_path(call);
        match self.backend.head(&path).await {
            Ok(_) => {
                self.backend.delete(&path).await?;
                Ok(true)
            }
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Every call under a per-call hold.
    pub async fn holds(&self) -> Result<HashSet<(String, CallId)>, StorageError> {
        let prefix = ObjPath::from(format!("{META}/holds"));
        let mut out = HashSet::new();
        for meta in self.list_prefix(Some(&prefix)).await? {
            let parts: Vec<_> = meta.location.parts().collect();
            if let [_, _, tenant, id] = parts.as_slice() {
                if let Some(id) = CallId::parse(id.as_ref()) {
                    out.insert((tenant.as_ref().to_string(), id));
                }
            }
        }
        Ok(out)
    }
}
