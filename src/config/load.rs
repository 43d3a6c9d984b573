//! Loading: the TOML text, then the `EARSHOT__SECTION__KEY` environment overrides
//! (tenants by id), then `<secret>_file` keys replaced by the files' contents, then
//! deserialising (errors name the key) and validating.

use std::path::Path;

use toml::{Table, Value};

use super::{invalid, Config, ConfigError, ENV_PREFIX, SECRET_KEYS};

impl Config {
    /// Reads, overrides from the process environment and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Self::from_toml_with_env(&text, path, std::env::vars())
    }

    /// Pure core of `load`: file text plus an environment.
    pub fn from_toml_with_env(
        text: &str,
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table: Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Syntax { path: path.to_path_buf(), message: e.to_string() })?;
        let mut env: Vec<(String, String)> = env.into_iter().filter(|(k, _)| k.starts_with(ENV_PREFIX)).collect();
        env.sort();
        for (var, value) in env {
            apply_env_override(&mut table, &var, &value)?;
        }
        let base_dir = path.parent().unwrap_or(Path::new("."));
        resolve_secret_files(&mut table, "", base_dir)?;
        let mut config: Config = serde_path_to_error::deserialize(Value::Table(table)).map_err(|e| {
            let key = e.path().to_string();
            invalid(if key == "." { "(root)".into() } else { key }, e.into_inner().to_string())
        })?;
        for t in &mut config.tenants {
            if let Some(p) = t.playbook.as_mut().filter(|p| p.is_relative()) {
                *p = base_dir.join(&*p);
            }
        }
        config.validate()?;
        Ok(config)
    }
}

fn env_value(key: &str, raw: &str) -> Value {
    let base = key.strip_suffix("_file").unwrap_or(key);
    if SECRET_KEYS.contains(&base) {
        return Value::String(raw.to_string());
    }
    // TOML literals (numbers, booleans, arrays, quoted strings) are taken as such;
    // anything else is a plain string.
    match format!("v = {raw}").parse::<Table>() {
        Ok(mut t) => t.remove("v").unwrap_or_else(|| Value::String(raw.to_string())),
        Err(_) => Value::String(raw.to_string()),
    }
}

fn apply_env_override(table: &mut Table, var: &str, raw: &str) -> Result<(), ConfigError> {
    let env_err = |message: String| ConfigError::Env { var: var.to_string(), message };
    let path: Vec<String> = var[ENV_PREFIX.len()..].split("__").map(str::to_ascii_lowercase).collect();
    if path.iter().any(String::is_empty) {
        return Err(env_err("empty key segment (use double underscores only between levels)".into()));
    }
    let (mut cursor, rest): (&mut Table, &[String]) = if path[0] == "tenants" {
        if path.len() < 3 {
            return Err(env_err("tenant overrides are EARSHOT__TENANTS__<ID>__<KEY>".into()));
        }
        let wanted = &path[1];
        let tenants = table.entry("tenants").or_insert_with(|| Value::Array(Vec::new()));
        let Value::Array(list) = tenants else {
            return Err(env_err("`tenants` in the file is not a list".into()));
        };
        // Env names cannot hold '-': match it as '_'.
        let norm = |s: &str| s.replace('-', "_");
        let idx =
            list.iter().position(|t| t.get("id").and_then(Value::as_str).is_some_and(|id| norm(id) == norm(wanted)));
        let idx = match idx {
            Some(i) => i,
            None => {
                let mut t = Table::new();
                t.insert("id".into(), Value::String(wanted.clone()));
                list.push(Value::Table(t));
                list.len() - 1
            }
        };
        let Value::Table(t) = &mut list[idx] else {
            return Err(env_err("tenant entry is not a table".into()));
        };
        (t, &path[2..])
    } else {
        (table, &path[..])
    };
    for (i, seg) in rest.iter().enumerate() {
        if i + 1 == rest.len() {
            cursor.insert(seg.clone(), env_value(seg, raw));
            return Ok(());
        }
        let next = cursor.entry(seg.clone()).or_insert_with(|| Value::Table(Table::new()));
        cursor = match next {
            Value::Table(t) => t,
            _ => return Err(env_err(format!("`{seg}` is not a section"))),
        };
    }
    Ok(())
}

/// Replaces every `<secret>_file = "path"` by `<secret> = <file contents, trimmed>`.
fn resolve_secret_files(table: &mut Table, prefix: &str, base_dir: &Path) -> Result<(), ConfigError> {
    let keys: Vec<String> = table.keys().cloned().collect();
    for key in keys {
        let full = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        if let Some(base) = key.strip_suffix("_file").filter(|b| SECRET_KEYS.contains(b)) {
            let Some(Value::String(p)) = table.get(&key) else {
                return Err(invalid(full, "must be a path string"));
            };
            if table.contains_key(base) {
                return Err(invalid(full, format!("give either `{base}` or `{key}`, not both")));
            }
            let path = base_dir.join(p);
            let secret = std::fs::read_to_string(&path).map_err(|source| ConfigError::SecretFile {
                key: full.clone(),
                path: path.clone(),
                source,
            })?;
            table.remove(&key);
            table.insert(base.to_string(), Value::String(secret.trim_end_matches(['\n', '\r']).to_string()));
            continue;
        }
        match table.get_mut(&key) {
            Some(Value::Table(t)) => resolve_secret_files(t, &full, base_dir)?,
            Some(Value::Array(list)) => {
                for (i, item) in list.iter_mut().enumerate() {
                    if let Value::Table(t) = item {
                        resolve_secret_files(t, &format!("{full}[{i}]"), base_dir)?;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}
