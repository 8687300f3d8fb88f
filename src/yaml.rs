//! The one place that touches `serde_yaml` (archived upstream): YAML documents in, with errors
//! that carry the field path (`projections[0].fields[2].cast`) and the line, and YAML out.

use serde::de::DeserializeOwned;

/// A YAML document that does not fit the expected type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{path}: {message}", line.map(|l| format!("line {l}: ")).unwrap_or_default())]
pub struct YamlError {
    /// Where in the document, as a field path (`.` for the root).
    pub path: String,
    /// The line (1-based), when known.
    pub line: Option<usize>,
    /// What is wrong, and what would be valid when serde says so.
    pub message: String,
}

/// Deserializes one YAML document, naming the field path of the first error.
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, YamlError> {
    let deserializer = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let line = inner.location().map(|l| l.line());
        // serde_yaml prefixes "path: " itself for nested errors; keep only the message.
        let message = inner.to_string();
        let message = message.strip_prefix(&format!("{path}: ")).unwrap_or(&message);
        let message = message.split(" at line ").next().unwrap_or(message).to_string();
        YamlError { path, line, message }
    })
}

/// Serializes a value as one YAML document.
pub fn to_string<T: serde::Serialize>(value: &T) -> Result<String, YamlError> {
    serde_yaml::to_string(value).map_err(|e| YamlError {
        path: ".".to_string(),
        line: None,
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        items: Vec<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        flag: bool,
    }

    #[test]
    fn errors_name_the_path_and_line() {
        let err = from_str::<Outer>("items:\n  - flag: true\n  - flag: yes-please\n").unwrap_err();
        assert_eq!(err.path, "items[1].flag");
        assert_eq!(err.line, Some(3));
        assert!(
            err.message.starts_with("invalid type: string \"yes-please\", expected a boolean"),
            "{err}"
        );
        let err = from_str::<Outer>("items:\n  - flga: true\n").unwrap_err();
        assert_eq!(err.path, "items[0].flga");
        assert!(err.message.contains("unknown field `flga`, expected `flag`"), "{err}");
    }
}
