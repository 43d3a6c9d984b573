//! What the ASR runtime is told at start: workers, the default language, the streaming
//! and overload policies, per-tenant models and languages, and post-call refinement.

use std::collections::HashMap;

use crate::asr::overload::OverloadSettings;
use crate::asr::stream_policy::PolicySettings;

#[derive(Debug, Clone)]
pub struct AsrSettings {
    pub workers: usize,
    pub language: String,
    pub policy: PolicySettings,
    pub overload: OverloadSettings,
    /// Tenants that use another model (an index into the hub's models) or language.
    pub tenants: HashMap<String, TenantAsr>,
    /// Post-call refinement for tenants that do not say (see `asr::refine`).
    pub refine: bool,
    /// Model (index) refinements use; `None`: the call's own.
    pub refine_model: Option<usize>,
    pub refine_beam: u32,
    /// Names of the hub's models, for the records refinements write.
    pub model_names: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct TenantAsr {
    pub model: usize,
    pub language: Option<String>,
    pub refine: Option<bool>,
}

impl AsrSettings {
    pub fn new(workers: usize, language: &str) -> Self {
        Self {
            workers,
            language: language.into(),
            policy: PolicySettings::default(),
            overload: OverloadSettings::default(),
            tenants: HashMap::new(),
            refine: false,
            refine_model: None,
            refine_beam: 5,
            model_names: Vec::new(),
        }
    }
}
