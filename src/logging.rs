//! The `log` backend: standard error, a log directory, or syslog.
