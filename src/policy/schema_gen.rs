//! The JSON Schema of policy files, generated from the Rust types so that it can never
//! disagree with the parser. Shipped as `policies/policy.schema.json`; editors with the YAML
//! language server validate and complete policy files from it.

use super::PolicyFile;

/// The schema as pretty JSON with a trailing newline (the shipped file's exact bytes).
pub fn policy_schema() -> String {
    let schema = schemars::schema_for!(PolicyFile);
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn shipped_schema_is_up_to_date() {
        let shipped = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/policies/policy.schema.json"))
            .unwrap_or_default();
        assert!(
            shipped == super::policy_schema(),
            "policies/policy.schema.json is out of date: run `cargo run -- schema > policies/policy.schema.json`"
        );
    }

    #[test]
    fn schema_rejects_unknown_fields() {
        let v: serde_json::Value = serde_json::from_str(&super::policy_schema()).unwrap();
        assert_eq!(v["additionalProperties"], false);
        assert!(v["$defs"]["RawLimits"]["properties"]["max_tokens"].is_object());
    }
}
