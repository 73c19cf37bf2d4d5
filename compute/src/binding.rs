//! Which database a compute serves, whether it is draining, and how busy it
//! is. A compute started with `--database` is bound from the start; one with
//! a control service waits unbound until `attach`; one with neither serves
//! whatever database each client names (a development convenience). A bound
//! compute is never rebound: no state may leak between tenants.

use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::error::ComputeError;

/// How the compute picks the database of a new session.
#[derive(Debug)]
enum Mode {
    /// Bound (from the start or by `attach`), or unbound and waiting.
    Bindable,
    /// No control service and no `--database`: each client names its own.
    AnyDatabase,
}

/// Binding, drain state and load counters of one compute.
#[derive(Debug)]
pub struct Binding {
    mode: Mode,
    database: RwLock<Option<String>>,
    draining: AtomicBool,
    connections: AtomicU64,
    in_flight: AtomicU64,
}

/// Why an attach was refused.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// The compute serves another database already.
    #[error("this compute is bound to database \"{0}\"; a bound compute is never rebound")]
    AlreadyBound(String),
    /// The compute serves whatever clients ask for; it cannot be bound.
    #[error("this compute was started without a control service binding; it cannot be attached")]
    NotBindable,
    /// The compute is draining.
    #[error("this compute is draining")]
    Draining,
}

impl Binding {
    /// Bound to `database` from the start.
    pub fn bound(database: String) -> Self {
        Self::new(Mode::Bindable, Some(database))
    }

    /// Unbound until [`attach`](Self::attach).
    pub fn unbound() -> Self {
        Self::new(Mode::Bindable, None)
    }

    /// Serves the database each client names.
    pub fn any_database() -> Self {
        Self::new(Mode::AnyDatabase, None)
    }

    fn new(mode: Mode, database: Option<String>) -> Self {
        Self {
            mode,
            database: RwLock::new(database),
            draining: AtomicBool::new(false),
            connections: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
        }
    }

    /// The database this compute is bound to, if any.
    pub fn database(&self) -> Option<String> {
        self.database.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Binds the compute to `database`; idempotent for the same database.
    pub fn attach(&self, database: &str) -> Result<(), AttachError> {
        if matches!(self.mode, Mode::AnyDatabase) {
            return Err(AttachError::NotBindable);
        }
        if self.is_draining() {
            return Err(AttachError::Draining);
        }
        let mut bound = self.database.write().unwrap_or_else(|p| p.into_inner());
        match bound.as_deref() {
            Some(d) if d == database => Ok(()),
            Some(d) => Err(AttachError::AlreadyBound(d.to_string())),
            None => {
                *bound = Some(database.to_string());
                Ok(())
            }
        }
    }

    /// Decides the database of a new session asking for `requested`.
    pub fn session_database(&self, requested: &str) -> Result<String, ComputeError> {
        if self.is_draining() {
            return Err(ComputeError::InvalidInput {
                sqlstate: "57P03",
                message: "this compute is draining and takes no new sessions; connect again".into(),
            });
        }
        match (&self.mode, self.database()) {
            (Mode::AnyDatabase, _) => Ok(requested.to_string()),
            (Mode::Bindable, Some(bound)) if bound == requested => Ok(bound),
            (Mode::Bindable, Some(bound)) => Err(ComputeError::InvalidInput {
                sqlstate: "3D000",
                message: format!("this compute serves database \"{bound}\", not \"{requested}\""),
            }),
            (Mode::Bindable, None) => Err(ComputeError::InvalidInput {
                sqlstate: "57P03",
                message: "this compute is not attached to a database yet".into(),
            }),
        }
    }

    /// Stops taking new sessions.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Whether [`drain`](Self::drain) was called.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Open sessions.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Statements executing now.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a session until the guard is dropped.
    pub fn session(self: &std::sync::Arc<Self>) -> LoadGuard {
        LoadGuard::new(self.clone(), |b| &b.connections)
    }

    /// Counts a statement until the guard is dropped.
    pub fn statement(self: &std::sync::Arc<Self>) -> LoadGuard {
        LoadGuard::new(self.clone(), |b| &b.in_flight)
    }
}

/// Decrements a load counter when dropped.
pub struct LoadGuard {
    binding: std::sync::Arc<Binding>,
    counter: fn(&Binding) -> &AtomicU64,
}

impl LoadGuard {
    fn new(binding: std::sync::Arc<Binding>, counter: fn(&Binding) -> &AtomicU64) -> Self {
        counter(&binding).fetch_add(1, Ordering::Relaxed);
        Self { binding, counter }
    }
}

impl Drop for LoadGuard {
    fn drop(&mut self) {
        (self.counter)(&self.binding).fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unbound_compute_binds_once_and_never_rebinds() {
        let b = Binding::unbound();
        assert_eq!(b.session_database("app").unwrap_err().sqlstate(), "57P03");
        b.attach("app").unwrap();
        b.attach("app").unwrap();
        assert!(matches!(b.attach("other"), Err(AttachError::AlreadyBound(d)) if d == "app"));
        assert_eq!(b.session_database("app").unwrap(), "app");
        assert_eq!(b.session_database("other").unwrap_err().sqlstate(), "3D000");
        b.drain();
        assert_eq!(b.session_database("app").unwrap_err().sqlstate(), "57P03");
        assert!(matches!(Binding::any_database().attach("x"), Err(AttachError::NotBindable)));
    }

    #[test]
    fn guards_count_sessions_and_statements() {
        let b = std::sync::Arc::new(Binding::bound("app".into()));
        let s = b.session();
        let q1 = b.statement();
        let q2 = b.statement();
        assert_eq!((b.connections(), b.in_flight()), (1, 2));
        drop(q1);
        drop(s);
        assert_eq!((b.connections(), b.in_flight()), (0, 1));
        drop(q2);
        assert_eq!(b.in_flight(), 0);
    }
}
