//! A chatroom's own settings: instructions for the model and the model itself, chosen
//! from the configured allow-list (`GEMINI_MODELS`), some of it for Pro users only.

use serde::Serialize;

use crate::config::GeminiSettings;
use crate::error::{AppError, AppResult};

/// Characters of instructions a chatroom may hold.
pub const INSTRUCTIONS_MAX: usize = 4000;

/// A change to one setting: left alone, cleared (JSON `null`), or set.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Change<T> {
    #[default]
    Keep,
    Clear,
    Set(T),
}

impl<T> Change<T> {
    /// From a field that may be absent (`None`), `null` (`Some(None)`) or a value.
    pub fn from_field(field: Option<Option<T>>) -> Self {
        match field {
            None => Self::Keep,
            Some(None) => Self::Clear,
            Some(Some(v)) => Self::Set(v),
        }
    }

    pub fn is_keep(&self) -> bool {
        matches!(self, Self::Keep)
    }
}

/// Trimmed, 1–4000 characters, no NUL; blank clears them.
pub fn parse_instructions(raw: &str) -> AppResult<Option<String>> {
    let text = raw.trim();
    if text.is_empty() {
        return Ok(None);
    }
    if text.chars().count() > INSTRUCTIONS_MAX || text.contains('\0') {
        return Err(AppError::validation(format!(
            "instructions must be at most {INSTRUCTIONS_MAX} characters, without NUL characters"
        )));
    }
    Ok(Some(text.to_string()))
}

/// One model a chatroom may choose.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct ModelChoice {
    pub id: String,
    /// Only Pro users may choose it.
    pub pro_only: bool,
}

/// The allow-list, default first.
pub fn choices(settings: &GeminiSettings) -> Vec<ModelChoice> {
    settings
        .models
        .iter()
        .map(|id| ModelChoice {
            id: id.clone(),
            pro_only: settings.pro_only_models.contains(id),
        })
        .collect()
}

/// A model the user may choose now: 422 outside the allow-list, 403
/// `pro_model_required` for a Pro-only one chosen by a Basic user.
pub fn check_choice(settings: &GeminiSettings, model: &str, tier: &str) -> AppResult<()> {
    if !settings.models.iter().any(|m| m == model) {
        return Err(AppError::validation(format!(
            "model must be one of: {} (or null for the default)",
            settings.models.join(", ")
        )));
    }
    if settings.pro_only_models.iter().any(|m| m == model) && tier != "pro" {
        return Err(AppError::Forbidden {
            code: "pro_model_required",
            message: format!("{model} is for Pro users: upgrade to choose it"),
        });
    }
    Ok(())
}

/// The model a reply is asked from: the chatroom's choice while it is still allowed for
/// its owner (the list may have changed, or a Pro user become Basic), else the default
/// (`None`).
pub fn model_for_reply(
    settings: &GeminiSettings,
    chosen: Option<&str>,
    tier: &str,
) -> Option<String> {
    let chosen = chosen?;
    match check_choice(settings, chosen, tier) {
        Ok(()) if chosen != settings.model => Some(chosen.to_string()),
        Ok(()) => None,
        Err(_) => {
            tracing::info!(
                model = chosen,
                tier,
                "chatroom's model no longer allowed; using the default"
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn settings() -> GeminiSettings {
        GeminiSettings {
            api_key: None,
            model: "flash".into(),
            models: vec!["flash".into(), "pro".into()],
            pro_only_models: vec!["pro".into()],
            base_url: String::new(),
            request_timeout: Duration::from_secs(1),
            retry_budget: Duration::from_secs(1),
            max_output_tokens: 1,
            history_max_messages: 2,
            history_max_chars: 10,
        }
    }

    #[test]
    fn the_allow_list_and_the_pro_only_models_are_enforced() {
        let s = settings();
        assert!(check_choice(&s, "flash", "basic").is_ok());
        assert!(check_choice(&s, "pro", "pro").is_ok());
        assert!(matches!(
            check_choice(&s, "pro", "basic"),
            Err(AppError::Forbidden {
                code: "pro_model_required",
                ..
            })
        ));
        assert!(matches!(
            check_choice(&s, "ultra", "pro"),
            Err(AppError::Validation(_))
        ));
    }

    #[test]
    fn a_reply_falls_back_to_the_default_when_the_choice_lapsed() {
        let s = settings();
        assert_eq!(
            model_for_reply(&s, Some("pro"), "pro").as_deref(),
            Some("pro")
        );
        assert_eq!(model_for_reply(&s, Some("pro"), "basic"), None);
        assert_eq!(model_for_reply(&s, Some("gone"), "pro"), None);
        assert_eq!(model_for_reply(&s, Some("flash"), "basic"), None);
        assert_eq!(model_for_reply(&s, None, "pro"), None);
    }

    #[test]
    fn instructions_are_trimmed_and_bounded() {
        assert_eq!(
            parse_instructions("  be brief ").unwrap().as_deref(),
            Some("be brief")
        );
        assert_eq!(parse_instructions("   ").unwrap(), None);
        assert!(parse_instructions(&"x".repeat(4001)).is_err());
        assert!(parse_instructions("a\0b").is_err());
    }
}
