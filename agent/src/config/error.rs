//! Config errors: each names the field path it concerns, and a load reports all it found.

use std::fmt;

use super::Config;

/// One problem in the configuration, tied to a field path such as `transforms[1].config.domains`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self { path: path.into(), message: message.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every error found in one load, in document order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub fn single(e: ConfigError) -> Self {
        Self(vec![e])
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// YAML text → typed config, recording the serde path of the first structural error.
pub(super) fn parse_yaml(text: &str) -> Result<Config, ConfigErrors> {
    if text.trim().is_empty() {
        return Ok(Config::default());
    }
    let mut path = String::new();
    let res: Result<Config, serde_saphyr::Error> =
        serde_saphyr::with_deserializer_from_str(text, |de| {
            serde_path_to_error::deserialize::<_, Config>(de).map_err(|e| {
                path = e.path().to_string();
                e.into_inner()
            })
        });
    res.map_err(|e| {
        let path = if path == "." { String::new() } else { path };
        ConfigErrors::single(ConfigError::new(path, e.to_string()))
    })
}
