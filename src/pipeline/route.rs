//! Routing stage: the request's model (or alias) → a configured provider that speaks the
//! caller's API. The upstream host always comes from the config, never from the request,
//! so warden cannot be used as an open relay.

use std::sync::Arc;

use crate::config::{Provider, Snapshot, VirtualKey};
use crate::error::ProxyError;
use crate::provider::{ApiFamily, ModelInfo};

pub struct Routed {
    pub provider: Arc<Provider>,
    /// Set when the upstream must receive another model name than the client sent (alias).
    pub rewrite_model: Option<String>,
    pub label: String,
    /// Where the request goes when the provider fails (empty for most routes: no allocation).
    pub fallbacks: Vec<crate::config::Fallback>,
}

pub fn resolve(snap: &Snapshot, family: ApiFamily, model: Option<&str>) -> Result<Routed, ProxyError> {
    let Some(model) = model else {
        return snap
            .default_provider(family)
            .map(|p| Routed {
                provider: p.clone(),
                rewrite_model: None,
                label: "default".into(),
                fallbacks: Vec::new(),
            })
            .ok_or_else(|| {
                ProxyError::ModelNotFound(format!("no enabled provider serves the {} API", family.label()))
            });
    };
    let Some(m) = snap.route(model) else {
        return Err(ProxyError::ModelNotFound(format!(
            "The model `{model}` does not exist or is not routed by warden"
        )));
    };
    if !m.provider.speaks(family) {
        return Err(ProxyError::WrongApi {
            model: model.to_string(),
            provider: m.provider.name.clone(),
            api: family.label(),
        });
    }
    Ok(Routed {
        provider: m.provider.clone(),
        rewrite_model: (m.upstream_model != model).then(|| m.upstream_model.to_string()),
        label: m.label.to_string(),
        fallbacks: m.fallbacks.to_vec(),
    })
}

/// Refuses a provider that is switched off (its key variable is unset). Runs after the
/// policy stage, so that what a policy says about a model is the answer a user sees whether
/// or not the provider is configured yet.
pub fn check_enabled(routed: &Routed, model: Option<&str>) -> Result<(), ProxyError> {
    match &routed.provider.disabled {
        Some(reason) => Err(ProxyError::ModelNotFound(match model {
            Some(model) => format!("The model `{model}` is not available: {reason}"),
            None => format!("not available: {reason}"),
        })),
        None => Ok(()),
    }
}

/// Unnamed `/v1` paths reach a provider only when its `extra_paths` lists them.
pub fn check_extra_path(routed: &Routed, path: &str) -> Result<(), ProxyError> {
    if routed.provider.extra_paths.iter().any(|g| g.matches(path)) {
        Ok(())
    } else {
        Err(ProxyError::PathNotForwarded { path: path.to_string(), provider: routed.provider.name.clone() })
    }
}

/// The models `GET /v1/models` shows this key: those routed to providers it may use.
pub fn visible_models(snap: &Snapshot, key: Option<&VirtualKey>) -> Vec<ModelInfo> {
    snap.models
        .iter()
        .filter(|m| {
            let Some(r) = snap.route(&m.id) else { return false };
            let allowed = key.and_then(|k| k.providers.as_ref()).is_none_or(|list| {
                list.iter().any(|&i| snap.providers.get(i).is_some_and(|p| Arc::ptr_eq(p, r.provider)))
            });
            allowed && r.provider.disabled.is_none()
        })
        .cloned()
        .collect()
}
