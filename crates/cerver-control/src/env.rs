//! What a sandbox and its runs are given: the engine, the environment (defaults ← sandbox ←
//! run) and the limits on what callers may set.

use std::collections::BTreeMap;

use cerver_jail::layout;
use cerver_runtime::Engine;

use crate::{ControlError, Entry};

/// Environment limits: they end up in every process's environment block.
const MAX_ENV_VARS: usize = 256;
const MAX_ENV_NAME: usize = 256;
const MAX_ENV_BYTES: usize = 64 * 1024;
const MAX_METADATA: usize = 64;
const MAX_METADATA_BYTES: usize = 16 * 1024;
/// Largest code accepted for one run.
pub const MAX_CODE_BYTES: usize = 1 << 20;

pub(crate) fn validate_env(envs: &BTreeMap<String, String>) -> Result<(), ControlError> {
    if envs.len() > MAX_ENV_VARS {
        return Err(ControlError::BadRequest(format!(
            "at most {MAX_ENV_VARS} environment variables"
        )));
    }
    let mut total = 0;
    for (k, v) in envs {
        let valid_name = !k.is_empty()
            // Characters, as the OpenAPI document's `maxLength` counts them (the bytes are
            // bounded by MAX_ENV_BYTES in all).
            && k.chars().count() <= MAX_ENV_NAME
            && !k.contains(['=', '\0'])
            && !k.starts_with(|c: char| c.is_ascii_digit());
        if !valid_name {
            return Err(ControlError::BadRequest(format!(
                "invalid environment variable name {:?}",
                k.chars().take(64).collect::<String>()
            )));
        }
        if v.contains('\0') {
            return Err(ControlError::BadRequest(format!(
                "environment variable {k} contains a NUL byte"
            )));
        }
        total += k.len() + v.len() + 2;
    }
    if total > MAX_ENV_BYTES {
        return Err(ControlError::BadRequest(format!(
            "environment larger than {MAX_ENV_BYTES} bytes"
        )));
    }
    Ok(())
}

pub(crate) fn validate_metadata(metadata: &BTreeMap<String, String>) -> Result<(), ControlError> {
    let bytes: usize = metadata.iter().map(|(k, v)| k.len() + v.len()).sum();
    if metadata.len() > MAX_METADATA || bytes > MAX_METADATA_BYTES {
        return Err(ControlError::BadRequest(format!(
            "metadata is limited to {MAX_METADATA} pairs and {MAX_METADATA_BYTES} bytes"
        )));
    }
    Ok(())
}

/// The code of one run or process: at most [`MAX_CODE_BYTES`], with a valid environment.
pub(crate) fn validate_code(
    code: &str,
    envs: &BTreeMap<String, String>,
) -> Result<(), ControlError> {
    if code.len() > MAX_CODE_BYTES {
        return Err(ControlError::BadRequest(format!(
            "code is larger than {MAX_CODE_BYTES} bytes"
        )));
    }
    validate_env(envs)
}

pub(crate) fn parse_engine(engine: Option<&str>) -> Result<Engine, ControlError> {
    match engine.unwrap_or("workers") {
        "workers" => Ok(Engine::Workers),
        "containers" => Ok(Engine::Containers),
        other => Err(ControlError::BadRequest(format!(
            "unknown engine {:?}: use \"workers\" or \"containers\"",
            other.chars().take(64).collect::<String>()
        ))),
    }
}

/// The environment code sees: defaults, then the sandbox's envs, then the run's overrides.
pub fn run_env(entry: &Entry, overrides: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = [
        ("CERVER_SANDBOX_ID", entry.id.as_str()),
        ("CERVER_ENGINE", entry.engine.as_str()),
        ("HOME", layout::HOME),
        ("USER", layout::USER),
        ("PATH", layout::PATH),
        ("LANG", layout::LANG),
        ("PYTHONUNBUFFERED", "1"),
        ("TMPDIR", layout::TMPDIR),
    ]
    .into_iter()
    .chain(layout::TOOL_CACHES)
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    if entry.engine == Engine::Containers {
        // As in an activated venv: `python`, `pip`-installed scripts come from it.
        env.insert("PATH".into(), layout::VENV_PATH.into());
        env.insert("VIRTUAL_ENV".into(), layout::VENV.into());
    }
    env.extend(entry.envs.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.extend(overrides.iter().map(|(k, v)| (k.clone(), v.clone())));
    env
}
