//! Errors of the controller crate.

/// Rendering the custom resource definitions failed.
#[derive(Debug, thiserror::Error)]
pub enum CrdError {
    /// A definition could not be written as YAML.
    #[error("could not write the CustomResourceDefinitions as YAML: {0}")]
    Yaml(#[from] serde_norway::Error),
}
