//! Errors of the console layer, worded for the node's `last_error` and for operators.

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// The node's configuration does not allow a console (no interface, bad driver_info).
    #[error("console: {0}")]
    Config(String),
    #[error("console: unknown console_interface {name:?} (this build serves: {known})")]
    UnknownInterface { name: String, known: String },
    #[error("console: cannot use the runtime directory {path}: {source}")]
    RuntimeDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("console: cannot listen on {address}: {source}")]
    Listen {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("console: cannot start the console actor: {0}")]
    Spawn(String),
}
