//! A route's JSON Schema, compiled once per config generation and shared by every request.

use jsonschema::{Draft, PatternOptions, Validator};
use serde_json::Value;

use super::{ValidationLimits, parse_json};
use crate::{Code, Denial, ErrorDetail};

/// The JSON Schema drafts a route may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaDraft {
    Draft7,
    Draft202012,
}

const DRAFT7_URIS: [&str; 2] = [
    "http://json-schema.org/draft-07/schema#",
    "http://json-schema.org/draft-07/schema",
];
const DRAFT202012_URIS: [&str; 2] = [
    "https://json-schema.org/draft/2020-12/schema",
    "https://json-schema.org/draft/2020-12/schema#",
];

impl SchemaDraft {
    /// The draft a schema's `$schema` names (Draft 2020-12 when absent); `None` for any
    /// other draft.
    pub fn detect(schema: &Value) -> Option<Self> {
        match schema.get("$schema") {
            None => Some(SchemaDraft::Draft202012),
            Some(Value::String(s)) if DRAFT7_URIS.contains(&s.as_str()) => {
                Some(SchemaDraft::Draft7)
            }
            Some(Value::String(s)) if DRAFT202012_URIS.contains(&s.as_str()) => {
                Some(SchemaDraft::Draft202012)
            }
            Some(_) => None,
        }
    }
}

/// A schema that cannot be compiled; `path` is a JSON pointer into the schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("schema {path}: {message}")]
pub struct SchemaError {
    pub path: String,
    pub message: String,
}

/// A compiled schema. Compiling checks the schema against its draft's meta-schema; `$ref`s
/// resolve only inside the document (nothing is fetched over the network or read from disk);
/// `pattern`s use a linear-time regex engine (no backtracking, so no ReDoS; look-around is
/// refused at compile time).
#[derive(Debug)]
pub struct JsonSchema {
    validator: Validator,
    draft: SchemaDraft,
}

impl JsonSchema {
    /// Compiles `schema` for `draft`, or for the draft its `$schema` names when `None`.
    /// Fails on an unsupported `$schema`, an invalid schema or an unresolvable `$ref`.
    pub fn compile(schema: &Value, draft: Option<SchemaDraft>) -> Result<Self, SchemaError> {
        let draft = match draft {
            Some(d) => d,
            None => SchemaDraft::detect(schema).ok_or_else(|| SchemaError {
                path: "/$schema".into(),
                message: "only Draft 7 and Draft 2020-12 schemas are supported".into(),
            })?,
        };
        let validator = jsonschema::options()
            .with_draft(match draft {
                SchemaDraft::Draft7 => Draft::Draft7,
                SchemaDraft::Draft202012 => Draft::Draft202012,
            })
            .offline()
            .with_pattern_options(PatternOptions::regex())
            .build(schema)
            .map_err(|e| SchemaError {
                path: e.instance_path().as_str().to_owned(),
                message: e.to_string(),
            })?;
        Ok(JsonSchema { validator, draft })
    }

    /// The draft the schema was compiled for.
    pub fn draft(&self) -> SchemaDraft {
        self.draft
    }

    /// Checks a parsed document: 422 `invalid_input` listing up to `max_errors` problems,
    /// each at its instance's JSON pointer. Messages never quote the client's values.
    pub fn check(&self, instance: &Value, max_errors: usize) -> Result<(), Denial> {
        let mut errors = self.validator.iter_errors(instance);
        let mut details: Vec<ErrorDetail> = Vec::new();
        let mut more = false;
        for e in errors.by_ref() {
            if details.len() == max_errors {
                more = true;
                break;
            }
            details.push(ErrorDetail {
                path: e.instance_path().as_str().to_owned(),
                message: e.masked().to_string(),
            });
        }
        if details.is_empty() && !more {
            return Ok(());
        }
        let message = match (details.len(), more) {
            (n, true) => {
                format!("body does not match the schema: more than {n} problems (first {n} listed)")
            }
            (1, false) => "body does not match the schema: 1 problem".to_owned(),
            (n, false) => format!("body does not match the schema: {n} problems"),
        };
        Err(Denial::new(Code::InvalidInput, message).with_details(details))
    }

    /// Parses `body` under `limits` (400 for invalid JSON, 413 past a limit), then
    /// [`JsonSchema::check`]s it; returns the document for later stages.
    pub fn check_body(&self, body: &[u8], limits: &ValidationLimits) -> Result<Value, Denial> {
        let doc = parse_json(body, limits)?;
        self.check(&doc, limits.max_errors)?;
        Ok(doc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "required": ["prompt"],
            "additionalProperties": false,
            "properties": {
                "prompt": {"type": "string", "maxLength": 10},
                "n": {"type": "integer", "minimum": 1, "maximum": 4},
                "tags": {"type": "array", "items": {"type": "string", "pattern": "^[a-z]+$"}}
            }
        })
    }

    #[test]
    fn compiled_schema_accepts_and_refuses_with_pointers() {
        let s = JsonSchema::compile(&schema(), None).unwrap();
        assert_eq!(s.draft(), SchemaDraft::Draft202012);
        let limits = ValidationLimits::default();
        let ok = s
            .check_body(br#"{"prompt":"hi","n":2,"tags":["a"]}"#, &limits)
            .unwrap();
        assert_eq!(ok["n"], 2);
        let e = s
            .check_body(
                br#"{"prompt":"secret-value-too-long","n":9,"tags":["A"],"x":1}"#,
                &limits,
            )
            .unwrap_err();
        assert_eq!(e.code, Code::InvalidInput);
        let mut paths: Vec<_> = e.details.iter().map(|d| d.path.as_str()).collect();
        paths.sort_unstable();
        assert_eq!(paths, vec!["", "/n", "/prompt", "/tags/0"]);
        assert!(
            e.details.iter().all(|d| !d.message.contains("secret")),
            "{:?}",
            e.details
        );
        let e = s.check_body(br#"{"prompt": 1"#, &limits).unwrap_err();
        assert_eq!(e.code, Code::InvalidJson);
        let e = s
            .check_body(br#"{"prompt":"a","prompt":"b"}"#, &limits)
            .unwrap_err();
        assert_eq!(e.code, Code::InvalidJson);
    }

    #[test]
    fn error_list_is_capped() {
        let s = JsonSchema::compile(
            &json!({"type": "array", "items": {"type": "string"}}),
            Some(SchemaDraft::Draft202012),
        )
        .unwrap();
        let e = s.check(&json!([1, 2, 3, 4, 5]), 2).unwrap_err();
        assert_eq!(e.details.len(), 2);
        assert!(e.message.contains("more than 2"), "{}", e.message);
    }

    #[test]
    fn draft7_semantics_apply() {
        // Draft 7: `items` as an array is tuple validation; `additionalItems` bounds the rest.
        let d7 = json!({"$schema": "http://json-schema.org/draft-07/schema#",
            "items": [{"type": "integer"}], "additionalItems": false});
        let s = JsonSchema::compile(&d7, None).unwrap();
        assert_eq!(s.draft(), SchemaDraft::Draft7);
        assert!(s.check(&json!([1]), 10).is_ok());
        let e = s.check(&json!([1, 2]), 10).unwrap_err();
        assert_eq!(e.code, Code::InvalidInput);
        // Draft 2020-12 spells it `prefixItems` / `items: false`.
        let d2020 = json!({"prefixItems": [{"type": "integer"}], "items": false});
        let s = JsonSchema::compile(&d2020, Some(SchemaDraft::Draft202012)).unwrap();
        assert!(s.check(&json!([1]), 10).is_ok());
        assert!(s.check(&json!([1, 2]), 10).is_err());
    }

    #[test]
    fn bad_schemas_and_remote_refs_fail_to_compile() {
        assert!(JsonSchema::compile(&json!({"type": "nope"}), None).is_err());
        assert!(
            JsonSchema::compile(
                &json!({"$schema": "http://json-schema.org/draft-04/schema#"}),
                None
            )
            .is_err()
        );
        let remote = json!({"$ref": "https://example.com/schema.json"});
        assert!(JsonSchema::compile(&remote, None).is_err());
        let file = json!({"$ref": "file:///etc/passwd"});
        assert!(JsonSchema::compile(&file, None).is_err());
        let local = json!({"$defs": {"n": {"type": "integer"}}, "$ref": "#/$defs/n"});
        let s = JsonSchema::compile(&local, None).unwrap();
        assert!(s.check(&json!(1), 10).is_ok());
        assert!(s.check(&json!("1"), 10).is_err());
        // Look-around needs backtracking; the linear-time engine refuses it.
        assert!(JsonSchema::compile(&json!({"pattern": "(?=a)a"}), None).is_err());
    }

    #[test]
    fn compiled_schema_is_shareable() {
        fn shareable<T: Send + Sync>() {}
        shareable::<JsonSchema>();
    }
}
