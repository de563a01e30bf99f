//! Logging through the host's `log` capability (grant `log` to the plugin). On
//! a native build the lines go to standard error, so unit tests show them.

use crate::LogLevel;

/// Write one line at `level`.
pub fn log(level: LogLevel, message: &str) {
    #[cfg(target_arch = "wasm32")]
    crate::bindings::controller::trellis::plugin::log::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{level:?}] {message}");
}

/// Log at debug level.
pub fn debug(message: &str) {
    log(LogLevel::Debug, message)
}

/// Log at info level.
pub fn info(message: &str) {
    log(LogLevel::Info, message)
}

/// Log at warn level.
pub fn warn(message: &str) {
    log(LogLevel::Warn, message)
}

/// Log at error level.
pub fn error(message: &str) {
    log(LogLevel::Error, message)
}
