//! A stop signal many tasks wait on: one [`Stop`] triggers it, every
//! [`Stopped`] clone hands out futures that resolve once it fired (or its
//! trigger was dropped).

use std::future::Future;

use tokio::sync::watch;

/// Fires the signal.
pub struct Stop(watch::Sender<bool>);

/// Waits for the signal; cheap to clone.
#[derive(Clone)]
pub struct Stopped(watch::Receiver<bool>);

/// A new, unfired signal.
pub fn signal() -> (Stop, Stopped) {
    let (tx, rx) = watch::channel(false);
    (Stop(tx), Stopped(rx))
}

impl Stop {
    /// Fires it: every waiter resolves.
    pub fn stop(&self) {
        let _ = self.0.send(true);
    }
}

impl Stopped {
    /// A future that resolves once the signal fired.
    pub fn wait(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.0.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_waiter_resolves_once_fired() {
        let (stop, stopped) = signal();
        let a = tokio::spawn(stopped.wait());
        let b = tokio::spawn(stopped.clone().wait());
        tokio::task::yield_now().await;
        assert!(!a.is_finished());
        stop.stop();
        a.await.unwrap();
        b.await.unwrap();
        stopped.wait().await;
    }
}
