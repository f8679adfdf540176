//! Serialises the tests that change environment variables, and restores
//! what they change.

use std::ffi::OsString;
use std::sync::{Mutex, MutexGuard};

static ENV: Mutex<()> = Mutex::new(());

/// Holds the process-wide environment lock; the variables it set or removed
/// are restored when it is dropped.
pub(crate) struct Env {
    saved: Vec<(OsString, Option<OsString>)>,
    _lock: MutexGuard<'static, ()>,
}

impl Env {
    /// Takes the lock and clears every variable the stores read (`AWS_*`,
    /// `R2_*`, `GOOGLE_*`, `AZURE_*`), and points the AWS shared config and
    /// credentials files at files that do not exist.
    pub fn clean() -> Self {
        let lock = ENV.lock().unwrap_or_else(|e| e.into_inner());
        let mut env = Env {
            saved: Vec::new(),
            _lock: lock,
        };
        let names: Vec<OsString> = std::env::vars_os()
            .map(|(k, _)| k)
            .filter(|k| {
                let k = k.to_string_lossy();
                ["AWS_", "R2_", "GOOGLE_", "AZURE_"]
                    .iter()
                    .any(|p| k.starts_with(p))
            })
            .collect();
        for name in names {
            env.remove(name);
        }
        env.set(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/pqsync-test/credentials",
        );
        env.set("AWS_CONFIG_FILE", "/nonexistent/pqsync-test/config");
        env
    }

    /// Sets a variable until the guard is dropped.
    pub fn set(&mut self, name: impl Into<OsString>, value: impl Into<OsString>) -> &mut Self {
        let name = name.into();
        self.save(&name);
        std::env::set_var(&name, value.into());
        self
    }

    /// Removes a variable until the guard is dropped.
    pub fn remove(&mut self, name: impl Into<OsString>) -> &mut Self {
        let name = name.into();
        self.save(&name);
        std::env::remove_var(&name);
        self
    }

    fn save(&mut self, name: &OsString) {
        if !self.saved.iter().any(|(n, _)| n == name) {
            self.saved.push((name.clone(), std::env::var_os(name)));
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for (name, value) in self.saved.drain(..).rev() {
            match value {
                Some(v) => std::env::set_var(&name, v),
                None => std::env::remove_var(&name),
            }
        }
    }
}
